package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

func TestWithStreamUsage(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		want     string // "" means body unchanged and injected false
		errParam *string
	}{
		{"no stream_options",
			`{"model":"m","stream":true,"messages":[]}`,
			`{"stream_options":{"include_usage":true},"model":"m","stream":true,"messages":[]}`, nil},
		{"leading whitespace",
			"\n\t {\n  \"model\": \"m\",\n  \"stream\": true\n}",
			"\n\t {\"stream_options\":{\"include_usage\":true},\n  \"model\": \"m\",\n  \"stream\": true\n}", nil},
		{"include_usage false",
			`{"model":"m","stream":true,"stream_options":{"include_usage":false}}`,
			`{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, nil},
		{"include_usage null, spaced",
			`{"model":"m","stream":true,"stream_options":{ "include_usage" : null , "x":1}}`,
			`{"model":"m","stream":true,"stream_options":{ "include_usage" : true , "x":1}}`, nil},
		{"stream_options with other fields",
			`{"model":"m","stream_options":{"include_obfuscation":false,"future":[1,{"include_usage":false}]},"stream":true}`,
			`{"model":"m","stream_options":{"include_usage":true,"include_obfuscation":false,"future":[1,{"include_usage":false}]},"stream":true}`, nil},
		{"stream_options empty",
			`{"model":"m","stream":true,"stream_options":{ }}`,
			`{"model":"m","stream":true,"stream_options":{"include_usage":true }}`, nil},
		{"stream_options null",
			`{"model":"m","stream":true,"stream_options":null}`,
			`{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, nil},
		{"escaped key names",
			`{"model":"m","str\u0065am":true,"stream_\u006fptions":{"include_usage":false}}`,
			`{"model":"m","str\u0065am":true,"stream_\u006fptions":{"include_usage":true}}`, nil},
		{"already true", `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, "", nil},
		{"not streaming", `{"model":"m","stream":false}`, "", nil},
		{"stream absent", `{"model":"m"}`, "", nil},
		{"empty object", `{}`, "", nil},
		{"nested stream members do not count", `{"model":"m","metadata":{"stream":true}}`, "", nil},
		{"stream_options a string", `{"stream":true,"stream_options":"x"}`, "", ptr("stream_options")},
		{"include_usage a number", `{"stream":true,"stream_options":{"include_usage":1}}`, "", ptr("stream_options.include_usage")},
		{"stream_options twice", `{"stream":true,"stream_options":{},"stream_options":{}}`, "", ptr("stream_options")},
		{"include_usage twice", `{"stream":true,"stream_options":{"include_usage":false,"include_usage":false}}`, "", ptr("stream_options.include_usage")},
		{"not an object", `[]`, "", ptr("")},
		{"truncated", `{"stream":true,"stream_options":{`, "", ptr("")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.body)
			out, injected, err := WithStreamUsage(body)
			if tc.errParam != nil {
				var re *RequestError
				if !errors.As(err, &re) || re.Param != *tc.errParam {
					t.Fatalf("error %v, want a RequestError for param %q", err, *tc.errParam)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				if injected || &out[0] != &body[0] || len(out) != len(body) {
					t.Fatalf("injected %v, out %q: want body itself, unchanged", injected, out)
				}
				return
			}
			if !injected || string(out) != tc.want {
				t.Fatalf("injected %v\ngot  %s\nwant %s", injected, out, tc.want)
			}
			if string(body) != tc.body {
				t.Fatal("WithStreamUsage modified its input")
			}
			checkNoDuplicateKeys(t, out)
			var got, orig map[string]any
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("output is not JSON: %v", err)
			}
			if got["stream_options"].(map[string]any)["include_usage"] != true {
				t.Fatalf("include_usage is not true in %s", out)
			}
			// Everything else is as sent.
			if err := json.Unmarshal(body, &orig); err != nil {
				t.Fatal(err)
			}
			so, _ := orig["stream_options"].(map[string]any)
			if so == nil {
				so = map[string]any{}
			}
			so["include_usage"] = true
			orig["stream_options"] = so
			if !reflect.DeepEqual(got, orig) {
				t.Fatalf("members changed:\ngot  %v\nwant %v", got, orig)
			}
			if req, err := ParseRequest(Completions, out); err != nil || !req.IncludeUsage {
				t.Fatalf("ParseRequest on the output: %+v, %v", req, err)
			}
		})
	}
}

func ptr(s string) *string { return &s }

// checkNoDuplicateKeys fails if any object in the JSON b repeats a key.
func checkNoDuplicateKeys(t *testing.T, b []byte) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	type frame struct {
		keys  map[string]bool
		isObj bool
		key   bool // the next string token is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.isObj && top.key {
			if s, ok := tok.(string); ok {
				if top.keys[s] {
					t.Fatalf("duplicate key %q in %s", s, b)
				}
				top.keys[s] = true
				top.key = false
				continue
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{keys: map[string]bool{}, isObj: true, key: true})
			continue
		case json.Delim('['):
			stack = append(stack, &frame{})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		if len(stack) > 0 && stack[len(stack)-1].isObj {
			stack[len(stack)-1].key = true
		}
	}
}
