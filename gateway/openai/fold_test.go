package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// upstreamView is a request body as an upstream written in Go reads it:
// encoding/json matches member names to fields case-insensitively (with
// Unicode folding) and the last of repeated members wins.
type upstreamView struct {
	Model         json.RawMessage `json:"model"`
	Stream        json.RawMessage `json:"stream"`
	StreamOptions json.RawMessage `json:"stream_options"`
	Messages      json.RawMessage `json:"messages"`
	Prompt        json.RawMessage `json:"prompt"`
	Input         json.RawMessage `json:"input"`
	Instructions  json.RawMessage `json:"instructions"`
}

// checkUpstreamAgrees fails t unless a case-insensitive upstream decoding
// body sees the model, stream flag, include_usage and prompt text that
// ParseRequest reported as req, both for body and, for streams that ask for
// usage through the gateway, for the body WithStreamUsage forwards.
func checkUpstreamAgrees(t *testing.T, ep Endpoint, body []byte, req Request) {
	t.Helper()
	var v upstreamView
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("accepted %s, which encoding/json refuses: %v", body, err)
	}
	var model string
	if err := json.Unmarshal(v.Model, &model); err != nil || model != req.Model {
		t.Fatalf("body %s: gateway model %q, upstream model %s", body, req.Model, v.Model)
	}
	if ep != Embeddings {
		if up := string(v.Stream) == "true"; up != req.Stream {
			t.Fatalf("body %s: gateway stream %v, upstream stream %v", body, req.Stream, up)
		}
		if up := upstreamIncludeUsage(t, v.StreamOptions); up != req.IncludeUsage {
			t.Fatalf("body %s: gateway include_usage %v, upstream include_usage %v", body, req.IncludeUsage, up)
		}
	}
	if up := upstreamPrompt(ep, &v); up != req.Prompt {
		t.Fatalf("body %s: gateway prompt %q, upstream prompt %q", body, req.Prompt, up)
	}
	if !ep.StreamUsageOptIn() || !req.Stream {
		return
	}
	out, _, err := WithStreamUsage(body)
	if err != nil {
		t.Fatalf("WithStreamUsage(%s): %v", body, err)
	}
	var w upstreamView
	if err := json.Unmarshal(out, &w); err != nil {
		t.Fatalf("WithStreamUsage made %s of %s: %v", out, body, err)
	}
	if string(w.Stream) != "true" || !upstreamIncludeUsage(t, w.StreamOptions) || upstreamPrompt(ep, &w) != req.Prompt {
		t.Fatalf("forwarded %s: upstream does not stream with usage the prompt %q", out, req.Prompt)
	}
}

func upstreamIncludeUsage(t *testing.T, opts json.RawMessage) bool {
	t.Helper()
	if len(opts) == 0 || opts[0] != '{' {
		return false
	}
	var o struct {
		IncludeUsage json.RawMessage `json:"include_usage"`
	}
	if err := json.Unmarshal(opts, &o); err != nil {
		t.Fatalf("stream_options %s: %v", opts, err)
	}
	return string(o.IncludeUsage) == "true"
}

// upstreamPrompt builds Request.Prompt from what upstream reads.
func upstreamPrompt(ep Endpoint, v *upstreamView) string {
	raw := map[Endpoint]json.RawMessage{ChatCompletions: v.Messages, Completions: v.Prompt, Embeddings: v.Input, Responses: v.Input}[ep]
	if string(raw) == "null" {
		raw = nil
	}
	if ep != Responses || len(v.Instructions) == 0 || v.Instructions[0] != '"' {
		return string(raw)
	}
	s := `{"instructions":` + string(v.Instructions)
	if raw != nil {
		s += `,"input":` + string(raw)
	}
	return s + "}"
}

// respell rewrites the member names of the JSON object body, and of its
// stream_options object, spelling each rune as plan says (see spellName),
// and keeps every value as it is. A body that is not an object is returned
// as is.
func respell(body, plan []byte) []byte {
	open := skipWS(body, 0)
	if open == len(body) || body[open] != '{' {
		return body
	}
	var out []byte
	out, _, ok := respellObject(out, body, open, 1, plan)
	if !ok {
		return body
	}
	return out
}

func respellObject(out, b []byte, open, depth int, plan []byte) ([]byte, []byte, bool) {
	out = append(out, '{')
	it := newObjIter(b, open, depth)
	for n := 0; ; n++ {
		k, ok := it.key()
		if !ok {
			break
		}
		if n > 0 {
			out = append(out, ',')
		}
		name := keyName(k)
		out, plan = spellName(out, name, plan)
		out = append(out, ':')
		at := it.i
		v, _ := it.value()
		if depth == 1 && string(name) == "stream_options" && len(v) > 0 && v[0] == '{' {
			if out, plan, ok = respellObject(out, b, at, 2, plan); !ok {
				return nil, nil, false
			}
			continue
		}
		out = append(out, v...)
	}
	return append(out, '}'), plan, it.err == nil
}

// spellName appends name as a JSON string, each rune spelled by the next
// byte of plan (0 once plan is used up): kept, upper-cased, \u-escaped, or
// for k and s the Kelvin sign and the long s, raw or escaped.
func spellName(out, name, plan []byte) ([]byte, []byte) {
	out = append(out, '"')
	for _, r := range string(name) {
		var op byte
		if len(plan) > 0 {
			op, plan = plan[0]%8, plan[1:]
		}
		lower := r >= 'a' && r <= 'z'
		switch {
		case op == 4 && lower:
			r -= 'a' - 'A'
		case op == 5 && r < utf8.RuneSelf:
			out = append(out, `\u00`...)
			out = append(out, "0123456789abcdef"[r>>4], "0123456789abcdef"[r&15])
			continue
		case op == 6 && (r == 'k' || r == 's'):
			r = map[rune]rune{'k': '\u212a', 's': '\u017f'}[r]
		case op == 7 && (r == 'k' || r == 's'):
			out = append(out, map[rune]string{'k': `\u212A`, 's': `\u017F`}[r]...)
			continue
		case op == 7 && lower:
			out = append(out, `\u00`...)
			out = append(out, "0123456789ABCDEF"[(r-32)>>4], "0123456789ABCDEF"[(r-32)&15])
			continue
		}
		q, _ := json.Marshal(string(r))
		out = append(out, q[1:len(q)-1]...)
	}
	return append(out, '"'), plan
}

func TestSpellName(t *testing.T) {
	for _, tc := range []struct {
		name string
		plan []byte
		want string
	}{
		{"model", nil, `"model"`},
		{"model", []byte{4, 4, 4, 4, 4}, `"MODEL"`},
		{"stream", []byte{6, 0, 0, 0, 0, 5}, `"ſtrea\u006d"`},
		{"max_tokens", []byte{0, 0, 0, 0, 0, 0, 7, 0, 0, 7}, `"max_to\u212Aen\u017F"`},
		{"messages", []byte{7}, `"\u004Dessages"`},
		{"a\"b", []byte{0}, `"a\"b"`},
	} {
		if got, _ := spellName(nil, []byte(tc.name), tc.plan); string(got) != tc.want {
			t.Errorf("spellName(%q, %v) = %s, want %s", tc.name, tc.plan, got, tc.want)
		}
	}
	body := []byte(`{"model":"a","stream_options":{"include_usage":true},"x":[1]}`)
	got := respell(body, []byte{4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4})
	if want := `{"Model":"a","stream_options":{"Include_usage":true},"x":[1]}`; string(got) != want {
		t.Errorf("respell = %s, want %s", got, want)
	}
}

// A member name that only case-folds to one the gateway reads would let a
// Go upstream (encoding/json folds names) run another model, stream
// unrecorded or read another prompt: ParseRequest must refuse it or agree
// with what such an upstream decodes. The corpus in testdata/fuzz holds the
// known attacks: "MODEL" beside "model", a lone "Model", "Stream" beside
// "stream", "Messages" beside "messages", the Kelvin sign and the long s,
// and an "Include_Usage" inside stream_options.
func FuzzParseRequestCaseFolding(f *testing.F) {
	f.Add(uint8(0), []byte(`{"model":"cheap","messages":[{"role":"user","content":"hello"}],"model":"expensive"}`), []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4})
	f.Add(uint8(3), []byte(`{"model":"m","input":"hello","stream":false,"stream":true}`), []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6})
	f.Fuzz(func(t *testing.T, epb uint8, body, plan []byte) {
		ep := Endpoint(1 + epb%4)
		body = respell(body, plan)
		req, err := ParseRequest(ep, body)
		if err != nil {
			var re *RequestError
			if !errors.As(err, &re) {
				t.Fatalf("error %v is not a *RequestError", err)
			}
			return
		}
		checkUpstreamAgrees(t, ep, body, req)
	})
}

func TestCaseVariantsOfEveryInterpretedMember(t *testing.T) {
	for folded, name := range foldedMembers {
		for _, variant := range []string{strings.ToUpper(name), strings.ToUpper(name[:1]) + name[1:],
			strings.Replace(strings.Replace(name, "k", "\u212a", 1), "s", "\u017f", 1)} {
			if variant == name {
				continue
			}
			q, _ := json.Marshal(variant)
			body := []byte(`{"model":"m","messages":[],` + string(q) + `:1}`)
			_, err := ParseRequest(ChatCompletions, body)
			var re *RequestError
			if !errors.As(err, &re) || re.Param != variant {
				t.Errorf("%s (folds to %s): error %v, want a RequestError naming %q", body, folded, err, variant)
			}
		}
	}
	if !bytes.Equal([]byte(foldedIncludeUsage), bytes.ToUpper([]byte("include_usage"))) {
		t.Fatal("foldedIncludeUsage is not include_usage folded")
	}
}
