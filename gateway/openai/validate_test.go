package openai

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/valyala/fastjson"
)

// validJSON reports whether b is one valid JSON value, by validValue.
func validJSON(b []byte) (bool, error) {
	i := skipWS(b, 0)
	if i == len(b) {
		return false, nil
	}
	end, _, err := validValue(b, i, 0)
	if err != nil {
		return false, err
	}
	return skipWS(b, end) == len(b), nil
}

var validatorCases = []string{
	`{}`, `[]`, `""`, `0`, `-0`, `1.5e+10`, `-12.34E-5`, `true`, `false`, `null`, ` [ 1 , "a" , { "k" : [ ] } ] `,
	`"\"\\\/\b\f\n\r\t\u00e9\uD83D\uDE42"`, `"\u12"`, `"\x"`, `"a` + "\x01" + `b"`, `"a` + "\x7f" + `b"`, `"` + "\xff" + `"`,
	`01`, `1.`, `.5`, `1e`, `1e+`, `-`, `+1`, `--1`, `1.5.5`, `0x10`, `Infinity`, `NaN`, `tru`, `truex`, `nul`, `[1,]`, `[,1]`,
	`{"a"}`, `{"a":}`, `{"a":1,}`, `{,}`, `{"a":1 "b":2}`, `{"a" 1}`, `{1:2}`, `[1 2]`, `[}`, `{]`, `[[]`, `]`, `"`,
	`"unterminated \"`, `{"a":[1,{"b":null}],"c":"\\"}`, `"` + strings.Repeat(`\\`, 9) + `"`, `"` + strings.Repeat(`\\`, 10) + `"`,
	`"long string with an escaped quote \" past sixty-four bytes, and then it goes on for a while ok"`,
	"[1,2]\x00", "\t\r\n {\"a\":1}\n", `{"a":1}}`, `[1]]`, `[] []`,
}

func TestValidValueMatchesEncodingJSON(t *testing.T) {
	for _, c := range validatorCases {
		got, err := validJSON([]byte(c))
		if want := json.Valid([]byte(c)); got != want || err != nil && !errors.Is(err, errSyntax) {
			t.Errorf("%q: valid %v (%v), encoding/json says %v", c, got, err, want)
		}
	}
}

func TestValidValueCount(t *testing.T) {
	for _, tc := range []struct {
		in    string
		count int
	}{{`[]`, 0}, {`[ ]`, 0}, {`[1]`, 1}, {`[1,[2,3],{"a":[4,5]}]`, 3}, {`{"a":1,"b":[1,2]}`, 2}, {`{}`, 0}, {`"x"`, 0}} {
		_, n, err := validValue([]byte(tc.in), 0, 0)
		if err != nil || n != tc.count {
			t.Errorf("%s: count %d, %v; want %d", tc.in, n, err, tc.count)
		}
	}
	deep := strings.Repeat("[", MaxNestingDepth+1) + strings.Repeat("]", MaxNestingDepth+1)
	if _, _, err := validValue([]byte(deep), 0, 0); !errors.Is(err, errTooDeep) {
		t.Errorf("%d levels: %v, want errTooDeep", MaxNestingDepth+1, err)
	}
	deep = strings.Repeat(`{"a":`, MaxNestingDepth) + "1" + strings.Repeat("}", MaxNestingDepth)
	if _, _, err := validValue([]byte(deep), 0, 0); err != nil {
		t.Errorf("%d levels of objects: %v", MaxNestingDepth, err)
	}
}

func FuzzValidValue(f *testing.F) {
	for _, c := range validatorCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := validJSON(b)
		if errors.Is(err, errTooDeep) {
			return // encoding/json allows 10000 levels
		}
		if want := json.Valid(b); got != want {
			t.Fatalf("%q: valid %v, encoding/json says %v", b, got, want)
		}
	})
}

// BenchmarkValidate compares the validating scanner with fastjson.Validate
// (which ParseRequest used to run after a separate scan) on a 1 KB request.
func BenchmarkValidate(b *testing.B) {
	b.Run("validValue", func(b *testing.B) {
		b.SetBytes(int64(len(benchChatRequest)))
		for b.Loop() {
			if _, _, err := validValue(benchChatRequest, 0, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fastjson", func(b *testing.B) {
		b.SetBytes(int64(len(benchChatRequest)))
		for b.Loop() {
			if err := fastjson.ValidateBytes(benchChatRequest); err != nil {
				b.Fatal(err)
			}
		}
	})
}
