package mock

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestAppendJSONString(t *testing.T) {
	tests := []struct{ name, in string }{
		{"empty", ""},
		{"plain", sentence},
		{"quotes and backslashes", `a"b\c`},
		{"control characters", "tab\tnl\ncr\rnul\x00bell\x07\x1f"},
		{"non-ASCII", "héllo ✓ 日本 😀"},
		{"line separators", "a\u2028b\u2029c"},
		{"invalid UTF-8", "a\xffb\xc3"},
		{"HTML stays literal", "<a href='x'>&</a>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := appendJSONString([]byte("prefix:"), tt.in)
			if !strings.HasPrefix(string(got), "prefix:") {
				t.Fatalf("dst prefix lost: %q", got)
			}
			got = got[len("prefix:"):]
			var back string
			if err := json.Unmarshal(got, &back); err != nil {
				t.Fatalf("%s is not a JSON string: %v", got, err)
			}
			want := strings.ToValidUTF8(tt.in, "\uFFFD")
			if back != want {
				t.Errorf("round trip %q, want %q", back, want)
			}
		})
	}
}

func TestAppendID(t *testing.T) {
	tests := []struct {
		n    uint64
		want string
	}{
		{1, "p-000000000001"},
		{123456789012, "p-123456789012"},
		{1234567890123, "p-1234567890123"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := string(appendID(nil, "p-", tt.n)); got != tt.want {
				t.Errorf("got %q", got)
			}
		})
	}
}

func TestCompletionText(t *testing.T) {
	tests := []struct {
		name   string
		chunks int
		words  int
	}{
		{"one chunk", 1, baseWords},
		{"default", DefaultChunks, baseWords},
		{"a word each", baseWords, baseWords},
		{"more chunks than base words", baseWords + 1, baseWords + 1},
		{"many", 1000, 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := newCompletionText(tt.chunks)
			if text.words() != tt.words || len(strings.Fields(text.s)) != tt.words {
				t.Fatalf("%d words (%d fields), want %d", text.words(), len(strings.Fields(text.s)), tt.words)
			}
			var b strings.Builder
			for i := range tt.chunks {
				c := text.chunk(i, tt.chunks)
				if strings.TrimSpace(c) == "" {
					t.Fatalf("chunk %d is empty", i)
				}
				b.WriteString(c)
			}
			if b.String() != text.s {
				t.Errorf("chunks concatenate to %q, want %q", b.String(), text.s)
			}
			if want := `"` + text.s + `"`; string(text.quoted) != want {
				t.Errorf("quoted %s, want %s", text.quoted, want)
			}
		})
	}
}

func TestTextsDecoding(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		items   int
		chars   int
		wantErr bool
	}{
		{"null", `null`, 0, 0, false},
		{"string", `"abc"`, 1, 3, false},
		{"escaped string", `"a\n\u00e9"`, 1, 3, false},
		{"plain non-ASCII string", `"héllo ✓"`, 1, 7, false},
		{"array of strings", `["ab","cde"]`, 2, 5, false},
		{"parts", `[{"type":"text","text":"ab"},{"type":"image_url","image_url":{}}]`, 2, 2, false},
		{"nested content", `[{"role":"user","content":[{"type":"input_text","text":"abc"}]}]`, 1, 3, false},
		{"number", `1`, 0, 0, true},
		{"array of numbers", `[1,2]`, 0, 0, true},
		{"bool element", `["a",true]`, 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var list textList
			var sum textSum
			errList := json.Unmarshal([]byte(tt.in), &list)
			errSum := json.Unmarshal([]byte(tt.in), &sum)
			if (errList != nil) != tt.wantErr || (errSum != nil) != tt.wantErr {
				t.Fatalf("errors %v, %v; wantErr %v", errList, errSum, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			chars := 0
			for _, it := range list {
				chars += it.chars
			}
			if len(list) != tt.items || chars != tt.chars {
				t.Errorf("textList: %d items, %d chars; want %d, %d", len(list), chars, tt.items, tt.chars)
			}
			if sum != (textSum{tt.items, tt.chars}) {
				t.Errorf("textSum %+v, want %d items, %d chars", sum, tt.items, tt.chars)
			}
		})
	}
}
