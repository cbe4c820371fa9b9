package openai

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/valyala/fastjson"
)

// refChunk is the straightforward reading of a chat or completions chunk
// with a fastjson tree, kept as the reference that the scanner-based
// learnChoices is tested against.
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
	if u, ok := usageFrom(usage, "prompt_tokens", "completion_tokens"); ok {
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
	c := firstChoice(choices)
	if c == nil {
		return r
	}
	var s []byte
	var ok bool
	if ep == ChatCompletions {
		s, ok = stringBytes(c.Get("delta", "content"))
	} else {
		s, ok = stringBytes(c.Get("text"))
	}
	if ok {
		r.text = string(s)
	}
	if fr, ok := stringBytes(c.Get("finish_reason")); ok && len(fr) > 0 {
		r.finish = finishReason(fr)
	}
	return r
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

func FuzzLearnChoicesMatchesFastjson(f *testing.F) {
	for _, name := range []string{"chat_stream_usage.sse", "completions_stream_usage.sse"} {
		for _, ev := range strings.Split(string(readTestdata(f, name)), "\n\n") {
			if d, ok := strings.CutPrefix(ev, "data: "); ok && d != "[DONE]" {
				f.Add([]byte(d), name[0] == 'c' && name[1] == 'h')
			}
		}
	}
	f.Add([]byte(`{"choices":[{"index":1,"delta":{"content":"x"}},{"delta":{"content":"caf\u00e9\n\"","content":"dup"},"finish_reason":"st\u006fp","index":0}],"usage":{"prompt_tokens":1e2,"completion_tokens":-3}}`), true)
	f.Add([]byte(` {"choices":[],"usage":{}} `), true)
	f.Add([]byte(`{"choices":[{"index":0,"text":"a"}],"choices":[]}`), false)
	var p fastjson.Parser
	f.Fuzz(func(t *testing.T, data []byte, chat bool) {
		if fastjson.ValidateBytes(data) != nil || bytes.Contains(data, []byte{0}) ||
			surrogateEscape.Match(bytes.ReplaceAll(data, []byte(`\u`), []byte(`\u `))) {
			return // only valid JSON is compared; garbage must just not panic
		}
		ep := Completions
		if chat {
			ep = ChatCompletions
		}
		want := refLearnChoices(&p, ep, data)
		got := scanChunk(ep, data)
		if !want.ok {
			return // fastjson refused it (depth > 300); nothing to compare
		}
		if got != want {
			t.Fatalf("payload %s\nscanner  %+v\nfastjson %+v", data, got, want)
		}
	})
}

func TestLearnChoicesMalformed(t *testing.T) {
	for _, data := range []string{
		`{"choices":[{"index":0,"delta":{"content":"x"}}]`,
		`{"choices":[{"index":0,"delta":{"content":"x"}}]} {}`,
		`{"choices":[{"index":0 "delta":{"content":"x"}}]}`,
		`{"choices":[{"index":0,"delta":{"content":"x"}} {}]}`,
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
