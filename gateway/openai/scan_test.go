package openai

import (
	"errors"
	"strings"
	"testing"
)

func TestSkipValue(t *testing.T) {
	tests := []struct {
		in    string
		end   int // -1: error
		count int
	}{
		{`"abc",`, 5, 0},
		{`"a\"b"x`, 6, 0},
		{`"a\\"x`, 5, 0},
		{`"a\\\"b"x`, 8, 0},
		{`"\\\\"`, 6, 0},
		{`"unterminated`, -1, 0},
		{`"unterminated\"`, -1, 0},
		{`123,`, 3, 0},
		{`true}`, 4, 0},
		{`[]`, 2, 0},
		{`[ ]`, 3, 0},
		{`[1]`, 3, 1},
		{`[1,[2,3],{"a,]":"[}"},"x"] tail`, 26, 4},
		{`{"a":1,"b":{"c":[1,2]}}`, 23, 2},
		{`[{},{},{}]`, 10, 3},
		{`["]"]`, 5, 1},
		{`[`, -1, 0},
		{`[[]`, -1, 0},
		{`,`, -1, 0},
	}
	for _, tc := range tests {
		end, n, err := skipValue([]byte(tc.in), 0, 0)
		if tc.end < 0 {
			if err == nil {
				t.Errorf("skipValue(%q) = %d, want an error", tc.in, end)
			}
			continue
		}
		if err != nil || end != tc.end || n != tc.count {
			t.Errorf("skipValue(%q) = %d, %d, %v; want %d, %d", tc.in, end, n, err, tc.end, tc.count)
		}
	}
	deep := []byte(strings.Repeat("[", MaxNestingDepth+1))
	if _, _, err := skipValue(deep, 0, 0); !errors.Is(err, errTooDeep) {
		t.Errorf("skipValue on %d levels: %v, want errTooDeep", len(deep), err)
	}
	ok := []byte(strings.Repeat("[", MaxNestingDepth) + strings.Repeat("]", MaxNestingDepth))
	if _, _, err := skipValue(ok, 0, 0); err != nil {
		t.Errorf("skipValue on %d levels: %v", MaxNestingDepth, err)
	}
}

func TestObjIter(t *testing.T) {
	in := []byte(` { "a" : 1 , "b\"c":[1,2] ,"d":{"e":"}"}}  `)
	it := newObjIter(in, 1, 1)
	var got []string
	for {
		k, v, ok := it.next()
		if !ok {
			break
		}
		got = append(got, string(k)+"="+string(v))
	}
	if it.err != nil || strings.Join(got, " ") != `a=1 b\"c=[1,2] d={"e":"}"}` || it.i != len(in)-2 {
		t.Fatalf("members %q, err %v, end %d", got, it.err, it.i)
	}
	for _, bad := range []string{`{"a":1,}`, `{"a" 1}`, `{"a":}`, `{"a":1 "b":2}`, `{a:1}`, `{"a":1`, `{`} {
		it := newObjIter([]byte(bad), 0, 1)
		for {
			if _, _, ok := it.next(); !ok {
				break
			}
		}
		if it.err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func TestUnquote(t *testing.T) {
	tests := []struct {
		raw, want string
		exact     bool
	}{
		{`plain`, "plain", true},
		{`a\"b\\c\/d\b\f\n\r\t`, "a\"b\\c/d\b\f\n\r\t", true},
		{`caf\u00e9 \u4f60`, "café 你", true},
		{`\ud83d\ude42`, "🙂", true},
		{`\ud83dx`, "\uFFFDx", false},
		{`\ude42`, "\uFFFD", false},
		{`\ud83d\u0041`, "\uFFFDA", false},
		{`\u12`, `\u12`, false},
		{`\q`, `\q`, false},
		{`end\`, `end\`, false},
	}
	for _, tc := range tests {
		got, exact := unquote([]byte(tc.raw))
		if string(got) != tc.want || exact != tc.exact {
			t.Errorf("unquote(%q) = %q, %v; want %q, %v", tc.raw, got, exact, tc.want, tc.exact)
		}
	}
}
