package openai

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/valyala/fastjson"
)

// This file keeps the straightforward readings of chunks and answers with a
// fastjson tree, which the package used before its one-pass scanner. They
// are the reference the scanner is fuzzed against, and the baseline of the
// *Reader benchmarks.

func refIntField(v *fastjson.Value, key string) (int, bool) {
	n := v.Get(key)
	if n == nil || n.Type() != fastjson.TypeNumber {
		return 0, false
	}
	f, err := n.Float64()
	if err != nil && f == 0 || f != f || f > maxCount {
		return 0, false
	}
	return int(max(f, 0)), true
}

func refUsage(v *fastjson.Value, in, out string) (Usage, bool) {
	if v == nil || v.Type() != fastjson.TypeObject {
		return Usage{}, false
	}
	p, okP := refIntField(v, in)
	var c int
	var okC bool
	if out != "" {
		c, okC = refIntField(v, out)
	}
	t, okT := refIntField(v, "total_tokens")
	if !okP && !okC {
		return Usage{}, false
	}
	u := Usage{PromptTokens: p, CompletionTokens: c, TotalTokens: p + c, Source: UsageUpstream}
	if okT && t != p+c {
		u.Discrepant, u.ReportedTotal = true, t
	}
	return u, true
}

func refString(v *fastjson.Value) ([]byte, bool) {
	if v == nil || v.Type() != fastjson.TypeString {
		return nil, false
	}
	b, err := v.StringBytes()
	return b, err == nil
}

func refFirstChoice(choices *fastjson.Value) *fastjson.Value {
	if choices == nil || choices.Type() != fastjson.TypeArray {
		return nil
	}
	arr, _ := choices.Array()
	for _, c := range arr {
		if c.Type() != fastjson.TypeObject {
			continue
		}
		if idx := c.Get("index"); idx == nil || idx.Type() == fastjson.TypeNumber && idx.GetFloat64() == 0 {
			return c
		}
	}
	return nil
}

// refChunk is what one chunk teaches.
type refChunk struct {
	text, finish string
	usage        Usage
	usageOnly    bool
	ok           bool
}

func refLearnChoices(p *fastjson.Parser, ep Endpoint, data []byte) (r refChunk) {
	v, err := p.ParseBytes(data)
	if err != nil || v.Type() != fastjson.TypeObject {
		return r
	}
	r.ok = true
	usage := v.Get("usage")
	if u, ok := refUsage(usage, "prompt_tokens", "completion_tokens"); ok {
		r.usage = u
	}
	choices := v.Get("choices")
	if choices == nil || choices.Type() != fastjson.TypeArray {
		return r
	}
	if arr, _ := choices.Array(); len(arr) == 0 {
		r.usageOnly = usage != nil && usage.Type() == fastjson.TypeObject
		return r
	}
	c := refFirstChoice(choices)
	if c == nil {
		return r
	}
	var s []byte
	var ok bool
	if ep == ChatCompletions {
		s, ok = refString(c.Get("delta", "content"))
	} else {
		s, ok = refString(c.Get("text"))
	}
	if ok {
		r.text = string(s)
	}
	if fr, ok := refString(c.Get("finish_reason")); ok && len(fr) > 0 {
		r.finish = finishReason(fr)
	}
	return r
}

func refParseResponse(p *fastjson.Parser, ep Endpoint, body []byte, maxText int) Result {
	res := Result{Usage: Usage{Source: UsageNone}}
	v, err := p.ParseBytes(body)
	if err != nil || v.Type() != fastjson.TypeObject || !ep.valid() {
		return res
	}
	var text []byte
	switch ep {
	case ChatCompletions, Completions:
		if c := refFirstChoice(v.Get("choices")); c != nil {
			if ep == Completions {
				if s, ok := refString(c.Get("text")); ok {
					text = append(text, s...)
				}
			} else if content := c.Get("message", "content"); content != nil && content.Type() == fastjson.TypeString {
				s, _ := refString(content)
				text = append(text, s...)
			} else if content != nil && content.Type() == fastjson.TypeArray {
				arr, _ := content.Array()
				for _, part := range arr {
					if part.Type() != fastjson.TypeObject {
						continue
					}
					if t := part.GetStringBytes("type"); len(t) > 0 && string(t) != "text" {
						continue
					}
					if s, ok := refString(part.Get("text")); ok {
						text = append(text, s...)
					}
				}
			}
			if fr, ok := refString(c.Get("finish_reason")); ok && len(fr) > 0 {
				res.FinishReason = finishReason(fr)
			}
		}
		if u, ok := refUsage(v.Get("usage"), "prompt_tokens", "completion_tokens"); ok {
			res.Usage = u
		}
	case Embeddings:
		if u, ok := refUsage(v.Get("usage"), "prompt_tokens", ""); ok {
			res.Usage = u
		}
	case Responses:
		for _, item := range v.GetArray("output") {
			if item.Type() != fastjson.TypeObject {
				continue
			}
			for _, part := range item.GetArray("content") {
				if part.Type() != fastjson.TypeObject || string(part.GetStringBytes("type")) != "output_text" {
					continue
				}
				if s, ok := refString(part.Get("text")); ok {
					text = append(text, s...)
				}
			}
		}
		if st, ok := refString(v.Get("status")); ok && len(st) > 0 {
			res.FinishReason = finishReason(st)
		}
		if u, ok := refUsage(v.Get("usage"), "input_tokens", "output_tokens"); ok {
			res.Usage = u
		}
	}
	res.TextBytes = len(text)
	if len(text) > maxText {
		text, res.Truncated = truncateUTF8(text, maxText), true
	}
	res.Text = string(text)
	return res
}

// scanChunk runs the tee's learnChoices on one payload.
func scanChunk(ep Endpoint, data []byte) refChunk {
	t := NewStreamTee(ep, false, 1<<20)
	usageOnly := t.learnChoices(data)
	res := t.Result()
	var u Usage
	if res.Usage.Source == UsageUpstream {
		u = res.Usage
	}
	return refChunk{text: res.Text, finish: res.FinishReason, usage: u, usageOnly: usageOnly, ok: t.stats.Malformed == 0}
}

// surrogateEscape matches the \u escapes of UTF-16 surrogates, which
// fastjson decodes differently (it keeps a lone one as text; we, like
// encoding/json, write U+FFFD).
var surrogateEscape = regexp.MustCompile(`(?i)\\u d[89a-f]`)

// comparable reports whether data is input on which the scanner and the
// fastjson reference must agree: valid JSON, no NUL, no surrogate escapes.
func comparable(data []byte) bool {
	return fastjson.ValidateBytes(data) == nil && !bytes.Contains(data, []byte{0}) &&
		!surrogateEscape.Match(bytes.ReplaceAll(data, []byte(`\u`), []byte(`\u `)))
}

func chunkSeeds(f *testing.F) [][]byte {
	var seeds [][]byte
	for _, name := range []string{"chat_stream_usage.sse", "completions_stream_usage.sse"} {
		for _, ev := range strings.Split(string(readTestdata(f, name)), "\n\n") {
			if d, ok := strings.CutPrefix(ev, "data: "); ok && d != "[DONE]" {
				seeds = append(seeds, []byte(d))
			}
		}
	}
	return seeds
}

func FuzzLearnChoicesMatchesFastjson(f *testing.F) {
	for _, s := range chunkSeeds(f) {
		f.Add(s, true)
	}
	f.Add([]byte(`{"choices":[{"index":1,"delta":{"content":"x"}},{"delta":{"content":"caf\u00e9\n\"","content":"dup"},"finish_reason":"st\u006fp","index":0}],"usage":{"prompt_tokens":1e2,"completion_tokens":-3}}`), true)
	f.Add([]byte(` {"choices":[],"usage":{}} `), true)
	f.Add([]byte(`{"choices":[{"index":0,"text":"a"}],"choices":[]}`), false)
	var p fastjson.Parser
	f.Fuzz(func(t *testing.T, data []byte, chat bool) {
		ep := Completions
		if chat {
			ep = ChatCompletions
		}
		got := scanChunk(ep, data) // must not panic on anything
		if !comparable(data) {
			return
		}
		want := refLearnChoices(&p, ep, data)
		if !want.ok {
			return // fastjson refused it (depth > 300); nothing to compare
		}
		if got != want {
			t.Fatalf("payload %s\nscanner  %+v\nfastjson %+v", data, got, want)
		}
	})
}

func FuzzParseResponseMatchesFastjson(f *testing.F) {
	for _, name := range []string{"chat_response.json", "responses_response.json", "embeddings_response.json"} {
		f.Add(readTestdata(f, name), uint8(0), uint16(1000))
	}
	f.Add([]byte(`{"choices":[{"index":0,"message":{"content":[{"type":"text","text":"a\nb"},{"text":"c"},{"type":1,"text":"d"},{"type":"image_url"}]}}]}`), uint8(0), uint16(3))
	f.Add([]byte(`{"choices":[{"text":"x\u00e9","finish_reason":"length"}],"usage":{"total_tokens":3}}`), uint8(1), uint16(2))
	f.Add([]byte(`{"output":[{"content":[{"text":"a","type":"output_text"},{"type":"refusal","text":"no"}]},{"content":"x"},7],"status":"completed","usage":{"input_tokens":1}}`), uint8(3), uint16(10))
	var p fastjson.Parser
	f.Fuzz(func(t *testing.T, body []byte, epb uint8, maxText uint16) {
		ep := Endpoint(1 + epb%4)
		got := ParseResponse(ep, body, int(maxText)) // must not panic on anything
		if !comparable(body) {
			return
		}
		want := refParseResponse(&p, ep, body, int(maxText))
		if want == (Result{Usage: Usage{Source: UsageNone}}) && got == want {
			return
		}
		if got != want {
			t.Fatalf("%v body %s\nscanner  %+v\nfastjson %+v", ep, body, got, want)
		}
	})
}

func TestLearnChoicesMalformed(t *testing.T) {
	for _, data := range []string{
		`{"choices":[{"index":0,"delta":{"content":"x"}}]`,
		`{"choices":[{"index":0,"delta":{"content":"x"}}]} {}`,
		`{"choices":[{"index":0 "delta":{"content":"x"}}]}`,
		`{"choices":[{"index":0,"delta":{"content":"x"}} {}]}`,
		`{"choices":[{"index":0,"delta":{"content":"x"},}]}`,
		`{"choices":[{"index":0,"delta":{"content":"x}}]}`,
		`["choices"]`,
		`data`,
		``,
	} {
		if got := scanChunk(ChatCompletions, []byte(data)); got.ok || got.text != "" {
			t.Errorf("%s: learned %+v from a malformed payload", data, got)
		}
	}
}

// BenchmarkChunkReader compares the scanner with a fastjson tree on the
// chunks of the testdata chat stream (one op = one chunk).
func BenchmarkChunkReader(b *testing.B) {
	var chunks [][]byte
	for _, ev := range strings.Split(string(readTestdata(b, "chat_stream_usage.sse")), "\n\n") {
		if d, ok := strings.CutPrefix(ev, "data: "); ok && d != "[DONE]" {
			chunks = append(chunks, []byte(d))
		}
	}
	b.Run("scanner", func(b *testing.B) {
		b.ReportAllocs()
		t := NewStreamTee(ChatCompletions, false, 1<<20)
		i := 0
		for b.Loop() {
			t.learnChoices(chunks[i%len(chunks)])
			if i++; i%len(chunks) == 0 {
				t.Reset(ChatCompletions, false, 1<<20)
			}
		}
	})
	b.Run("fastjson", func(b *testing.B) {
		b.ReportAllocs()
		var p fastjson.Parser
		i := 0
		for b.Loop() {
			refLearnChoices(&p, ChatCompletions, chunks[i%len(chunks)])
			i++
		}
	})
}

// BenchmarkResponseReader compares ParseResponse with the fastjson reading
// on the ~600-byte chat completion.
func BenchmarkResponseReader(b *testing.B) {
	b.Run("scanner", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ParseResponse(ChatCompletions, benchChatResponse, 64<<10)
		}
	})
	b.Run("fastjson", func(b *testing.B) {
		b.ReportAllocs()
		var p fastjson.Parser
		for b.Loop() {
			refParseResponse(&p, ChatCompletions, benchChatResponse, 64<<10)
		}
	})
}
