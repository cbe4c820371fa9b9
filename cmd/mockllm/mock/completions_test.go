package mock

import (
	"strings"
	"testing"
)

// textCompletion is a text_completion body or stream chunk.
type textCompletion struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Text         string  `json:"text"`
		Index        int     `json:"index"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *chatUsage `json:"usage"`
}

func TestCompletions(t *testing.T) {
	ts := newTestServer(t, Options{})
	tests := []struct {
		name   string
		prompt string
		tokens int
	}{
		{"string prompt", `"Say this is a test"`, 5},
		{"array prompt", `["abcd","efgh","i"]`, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := `{"model":"gpt-3.5-turbo-instruct","prompt":` + tt.prompt
			c := decode[textCompletion](t, ts.post("/v1/completions", req+`}`, 200).body)
			if !strings.HasPrefix(c.ID, "cmpl-mock") || c.Object != "text_completion" || c.Model != "gpt-3.5-turbo-instruct" {
				t.Errorf("envelope %q %q %q", c.ID, c.Object, c.Model)
			}
			if len(c.Choices) != 1 || c.Choices[0].FinishReason == nil || *c.Choices[0].FinishReason != "stop" {
				t.Fatalf("choices %+v", c.Choices)
			}
			text := c.Choices[0].Text
			if want := (chatUsage{tt.tokens, len(strings.Fields(text)), tt.tokens + len(strings.Fields(text))}); c.Usage == nil || *c.Usage != want {
				t.Errorf("usage %+v, want %+v", c.Usage, want)
			}

			evs := parseSSE(t, ts.post("/v1/completions", req+`,"stream":true,"stream_options":{"include_usage":true}}`, 200).body)
			if evs[len(evs)-1].data != "[DONE]" {
				t.Fatalf("stream does not end with [DONE]")
			}
			var got strings.Builder
			var chunks []textCompletion
			for _, ev := range evs[:len(evs)-1] {
				ch := decode[textCompletion](t, ev.data)
				chunks = append(chunks, ch)
				if ch.Object != "text_completion" {
					t.Errorf("chunk object %q", ch.Object)
				}
				if len(ch.Choices) > 0 {
					got.WriteString(ch.Choices[0].Text)
				}
			}
			if len(chunks) != DefaultChunks+2 {
				t.Errorf("%d chunks, want %d content + finish + usage", len(chunks), DefaultChunks)
			}
			if fin := chunks[len(chunks)-2].Choices[0].FinishReason; fin == nil || *fin != "stop" {
				t.Errorf("finish chunk %+v", chunks[len(chunks)-2])
			}
			if u := chunks[len(chunks)-1].Usage; u == nil || *u != *c.Usage {
				t.Errorf("stream usage %+v, want %+v", u, c.Usage)
			}
			if got.String() != text {
				t.Errorf("stream text %q, want %q", got.String(), text)
			}
		})
	}
}
