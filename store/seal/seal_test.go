package seal_test

import (
	"bytes"
	"testing"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/store/seal"
)

// A row's ciphertext opens only as what it was sealed as: its
// organization, its row, its column. Under the same data key (two
// organizations never share one, but the binding must not rely on it),
// any other organization, row or column fails.
func TestRowADBindsOrgRowAndField(t *testing.T) {
	h, err := seal.NewDEK()
	if err != nil {
		t.Fatal(err)
	}
	p, err := seal.Primitive(h)
	if err != nil {
		t.Fatal(err)
	}
	org, other, row, row2 := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	ct, err := p.Encrypt([]byte("secret"), seal.AppendRowAD(nil, seal.FieldPrompt, org, row))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := p.Decrypt(ct, seal.AppendRowAD(nil, seal.FieldPrompt, org, row)); err != nil || string(pt) != "secret" {
		t.Fatalf("own binding: %q, %v", pt, err)
	}
	for name, ad := range map[string][]byte{
		"another organization": seal.AppendRowAD(nil, seal.FieldPrompt, other, row),
		"another row":          seal.AppendRowAD(nil, seal.FieldPrompt, org, row2),
		"the response column":  seal.AppendRowAD(nil, seal.FieldResponse, org, row),
	} {
		if _, err := p.Decrypt(ct, ad); err == nil {
			t.Errorf("the ciphertext opens as %s", name)
		}
	}
}

// A wrapped data key unwraps only for its organization and under its KEK;
// a rekeyed keyset still opens what the older key sealed, and its
// ciphertexts name another key.
func TestWrapRekey(t *testing.T) {
	kek, err := seal.NewLocalKEK()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := seal.NewLocalKEK()
	org := uuid.New()
	h, _ := seal.NewDEK()
	wrapped, err := seal.Wrap(kek, org, h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seal.Unwrap(kek, uuid.New(), wrapped); err == nil {
		t.Error("the data key unwraps for another organization")
	}
	if _, err := seal.Unwrap(other, org, wrapped); err == nil {
		t.Error("the data key unwraps under another KEK")
	}
	h2, err := seal.Unwrap(kek, org, wrapped)
	if err != nil {
		t.Fatal(err)
	}
	p1, _ := seal.Primitive(h2)
	ad := seal.AppendRowAD(nil, seal.FieldPrompt, org, uuid.New())
	old, _ := p1.Encrypt([]byte("old"), ad)
	h3, err := seal.Rekey(h2)
	if err != nil {
		t.Fatal(err)
	}
	p2, _ := seal.Primitive(h3)
	fresh, _ := p2.Encrypt([]byte("new"), ad)
	if bytes.Equal(old[:5], fresh[:5]) {
		t.Error("the rekeyed keyset seals under the old key id")
	}
	if pt, err := p2.Decrypt(old, ad); err != nil || string(pt) != "old" {
		t.Errorf("the rekeyed keyset does not open the old row: %v", err)
	}
}

// The KEK check opens only under its KEK; a KEK never prints its keys.
func TestKEKCheck(t *testing.T) {
	kek, _ := seal.NewLocalKEK()
	other, _ := seal.NewLocalKEK()
	ct, err := seal.NewKEKCheck(kek)
	if err != nil {
		t.Fatal(err)
	}
	if err := seal.VerifyKEKCheck(kek, ct); err != nil {
		t.Error(err)
	}
	if err := seal.VerifyKEKCheck(other, ct); err == nil {
		t.Error("another KEK passes the check")
	}
	js, _ := kek.MarshalJSON()
	if _, err := seal.ParseLocalKEK(js); err != nil {
		t.Errorf("the keyset does not read back: %v", err)
	}
	if bytes.Contains([]byte(kek.String()), []byte("value")) || bytes.Contains([]byte(kek.String()), js[:20]) {
		t.Errorf("String shows key material: %s", kek)
	}
	if _, err := seal.ParseLocalKEK([]byte(`{"not":"a keyset"}`)); err == nil {
		t.Error("garbage parses as a keyset")
	}
}

// BenchmarkUnwrap is what a data-key cache miss costs besides its
// PostgreSQL read: the KEK's decryption of the keyset and the AEAD built
// from it (a KMS adds its round trip).
func BenchmarkUnwrap(b *testing.B) {
	kek, _ := seal.NewLocalKEK()
	org := uuid.New()
	h, _ := seal.NewDEK()
	wrapped, _ := seal.Wrap(kek, org, h)
	b.ReportAllocs()
	for range b.N {
		h, err := seal.Unwrap(kek, org, wrapped)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := seal.Primitive(h); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSealRow is the writer's work per sealed row of a 1 KB prompt
// and a short response: two encryptions.
func BenchmarkSealRow(b *testing.B) {
	h, _ := seal.NewDEK()
	p, _ := seal.Primitive(h)
	org, row := uuid.New(), uuid.New()
	prompt, resp := bytes.Repeat([]byte("lorem ipsum "), 85), []byte("secret answer 0")
	var ad []byte
	b.SetBytes(int64(len(prompt) + len(resp)))
	b.ReportAllocs()
	for range b.N {
		ad = seal.AppendRowAD(ad[:0], seal.FieldPrompt, org, row)
		if _, err := p.Encrypt(prompt, ad); err != nil {
			b.Fatal(err)
		}
		ad = seal.AppendRowAD(ad[:0], seal.FieldResponse, org, row)
		if _, err := p.Encrypt(resp, ad); err != nil {
			b.Fatal(err)
		}
	}
}
