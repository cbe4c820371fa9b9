package apikey

import (
	"strings"
	"testing"

	"github.com/google/uuid"
)

func TestGenerateCheck(t *testing.T) {
	org := uuid.New()
	seen := map[string]bool{}
	for range 100 {
		k, err := Generate(org)
		if err != nil {
			t.Fatal(err)
		}
		if len(k) != Len || seen[k] {
			t.Fatalf("bad or repeated key %q", k)
		}
		seen[k] = true
		got, ok := Check([]byte(k))
		if !ok || string(got) != org.String() {
			t.Fatalf("Check(%q) = %q, %v", k, got, ok)
		}
	}
}

func TestCheckRejects(t *testing.T) {
	org := uuid.New()
	k, _ := Generate(org)
	other, _ := Generate(uuid.New())
	flip := func(i int) string {
		b := []byte(k)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	cases := map[string]string{
		"empty":                  "",
		"truncated":              k[:Len-1],
		"extended":               k + "x",
		"wrong prefix":           "pk" + k[2:],
		"openai style":           "sk-proj-" + k[8:],
		"typo in secret":         flip(50),
		"typo in checksum":       flip(Len - 1), // the last character carries 2 bits and 4 zero bits
		"typo in checksum start": flip(Len - 6),
		"typo in org":            flip(5),
		"upper-case org":         k[:3] + strings.ToUpper(k[3:39]) + k[39:],
		"org swapped":            other[:39] + k[39:], // another tenant's org segment
		"bad base64 in secret":   k[:45] + "!" + k[46:],
		"missing separator":      k[:39] + "-" + k[40:],
		"dash misplaced in uuid": k[:4] + "-" + k[5:],
	}
	for name, bad := range cases {
		if _, ok := Check([]byte(bad)); ok {
			t.Errorf("%s: Check accepted %q", name, bad)
		}
	}
}

func TestDisplayRevealsLittle(t *testing.T) {
	k, _ := Generate(uuid.New())
	d := Display(k)
	if !strings.HasPrefix(d, "sk_") || len(d) > 20 {
		t.Errorf("Display = %q", d)
	}
	if strings.Contains(d, k[40:50]) {
		t.Errorf("Display %q contains part of the secret", d)
	}
}

func BenchmarkCheckAndHash(b *testing.B) {
	k, _ := Generate(uuid.New())
	key := []byte(k)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := Check(key); !ok {
			b.Fatal("rejected")
		}
		_ = Hash(key)
	}
}

func BenchmarkCheckGarbage(b *testing.B) {
	key := []byte("sk_" + strings.Repeat("x", Len-3))
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := Check(key); ok {
			b.Fatal("accepted")
		}
	}
}
