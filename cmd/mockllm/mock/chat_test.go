package mock

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

// chatUsage is the usage object of chat and legacy completions.
type chatUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// chatCompletion is a non-stream chat.completion.
type chatCompletion struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index   int `json:"index"`
		Message struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage chatUsage `json:"usage"`
}

// chatChunk is one chat.completion.chunk.
type chatChunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Delta struct {
			Role    *string `json:"role"`
			Content *string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *chatUsage `json:"usage"`
}

const helloChat = `{"model":"gpt-4o-mini","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello there, mock!"}]}`

func TestChatNonStream(t *testing.T) {
	ts := newTestServer(t, Options{})
	r := ts.post("/v1/chat/completions", helloChat, 200, "x-request-id", "req-1")

	if got := r.header["content-type"]; got != "application/json" {
		t.Errorf("content-type %q", got)
	}
	if got := r.header["x-mock-request-id"]; got != "req-1" {
		t.Errorf("x-mock-request-id %q, want req-1", got)
	}
	top := decode[map[string]json.RawMessage](t, r.body)
	if got, want := keys(top), "choices,created,id,model,object,usage"; got != want {
		t.Errorf("top-level keys %s, want %s", got, want)
	}
	c := decode[chatCompletion](t, r.body)
	if !strings.HasPrefix(c.ID, "chatcmpl-mock") || c.Object != "chat.completion" || c.Model != "gpt-4o-mini" || c.Created == 0 {
		t.Errorf("envelope id=%q object=%q model=%q created=%d", c.ID, c.Object, c.Model, c.Created)
	}
	if len(c.Choices) != 1 {
		t.Fatalf("%d choices, want 1", len(c.Choices))
	}
	ch := c.Choices[0]
	if ch.Index != 0 || ch.Message.Role != "assistant" || ch.FinishReason != "stop" {
		t.Errorf("choice %+v", ch)
	}
	if !strings.HasPrefix(ch.Message.Content, sentence) {
		t.Errorf("content %q does not start with %q", ch.Message.Content, sentence)
	}
	// "Be brief." (9) + "Hello there, mock!" (18) = 27 chars → ceil(27/4) = 7, + 2 messages × 4.
	wantPrompt := 7 + 8
	wantCompletion := len(strings.Fields(ch.Message.Content))
	if c.Usage != (chatUsage{wantPrompt, wantCompletion, wantPrompt + wantCompletion}) {
		t.Errorf("usage %+v, want prompt %d completion %d", c.Usage, wantPrompt, wantCompletion)
	}
	if n := len(r.body); n < 500 || n > 700 {
		t.Errorf("body is %d bytes, want about 600", n)
	}
}

func TestChatPromptTokens(t *testing.T) {
	tests := []struct {
		name string
		body string
		want int
	}{
		{"no messages", `{"model":"m"}`, 0},
		{"one empty message", `{"messages":[{"role":"user","content":""}]}`, 4},
		{"rounds up", `{"messages":[{"role":"user","content":"abcde"}]}`, 2 + 4},
		{"counts code points not bytes", `{"messages":[{"role":"user","content":"héllo wörld ✓"}]}`, 4 + 4},
		{"content parts", `{"messages":[{"role":"user","content":[{"type":"text","text":"abcd"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"efgh"}]}]}`, 2 + 4},
		{"null content", `{"messages":[{"role":"assistant","content":null,"tool_calls":[]},{"role":"user","content":"abcd"}]}`, 1 + 8},
	}
	ts := newTestServer(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := decode[chatCompletion](t, ts.post("/v1/chat/completions", tt.body, 200).body)
			if c.Usage.PromptTokens != tt.want {
				t.Errorf("prompt_tokens %d, want %d", c.Usage.PromptTokens, tt.want)
			}
			if c.Usage.TotalTokens != c.Usage.PromptTokens+c.Usage.CompletionTokens {
				t.Errorf("total_tokens %d != %d + %d", c.Usage.TotalTokens, c.Usage.PromptTokens, c.Usage.CompletionTokens)
			}
		})
	}
}

func TestChatModelDefault(t *testing.T) {
	ts := newTestServer(t, Options{})
	c := decode[chatCompletion](t, ts.post("/v1/chat/completions", `{"messages":[]}`, 200).body)
	if c.Model != defaultModel {
		t.Errorf("model %q, want %q", c.Model, defaultModel)
	}
	c = decode[chatCompletion](t, ts.post("/v1/chat/completions", `{"model":"we\"ird\n\u2028model"}`, 200).body)
	if c.Model != "we\"ird\n\u2028model" {
		t.Errorf("model %q not echoed intact", c.Model)
	}
}

// chatStream posts a streaming chat request and returns its parsed chunks,
// checking the framing: every event is a data event and the last is [DONE].
func chatStream(t *testing.T, ts *testServer, body string, headers ...string) []chatChunk {
	t.Helper()
	r := ts.post("/v1/chat/completions", body, 200, headers...)
	if got := r.header["content-type"]; got != "text/event-stream" {
		t.Fatalf("content-type %q", got)
	}
	evs := parseSSE(t, r.body)
	if last := evs[len(evs)-1]; last.data != "[DONE]" || last.name != "" {
		t.Fatalf("last event %+v, want data: [DONE]", last)
	}
	var chunks []chatChunk
	for _, ev := range evs[:len(evs)-1] {
		if ev.name != "" {
			t.Fatalf("unexpected named event %q", ev.name)
		}
		chunks = append(chunks, decode[chatChunk](t, ev.data))
	}
	return chunks
}

func TestChatStream(t *testing.T) {
	const stream = `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"abcdefgh"}]%s}`
	tests := []struct {
		name         string
		extra        string
		includeUsage bool
	}{
		{"without stream_options", "", false},
		{"include_usage false", `,"stream_options":{"include_usage":false}`, false},
		{"include_usage true", `,"stream_options":{"include_usage":true}`, true},
	}
	ts := newTestServer(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := strings.Replace(stream, "%s", tt.extra, 1)
			chunks := chatStream(t, ts, body)
			want := 1 + DefaultChunks + 1 // role, content, finish
			if tt.includeUsage {
				want++
			}
			if len(chunks) != want {
				t.Fatalf("%d chunks, want %d", len(chunks), want)
			}
			for i, c := range chunks {
				if c.Object != "chat.completion.chunk" || c.ID != chunks[0].ID || c.Model != "gpt-4o" {
					t.Errorf("chunk %d envelope %q %q %q", i, c.Object, c.ID, c.Model)
				}
			}
			first := chunks[0].Choices[0]
			if first.Delta.Role == nil || *first.Delta.Role != "assistant" || first.Delta.Content == nil || *first.Delta.Content != "" {
				t.Errorf("first delta %+v, want role assistant and empty content", first.Delta)
			}
			for i := 1; i <= DefaultChunks; i++ {
				ch := chunks[i].Choices[0]
				if ch.Delta.Content == nil || *ch.Delta.Content == "" || ch.FinishReason != nil {
					t.Errorf("content chunk %d: %+v", i, ch)
				}
			}
			fin := chunks[DefaultChunks+1].Choices[0]
			if fin.FinishReason == nil || *fin.FinishReason != "stop" || fin.Delta.Content != nil || fin.Delta.Role != nil {
				t.Errorf("finish chunk %+v", fin)
			}
			if !tt.includeUsage {
				for i, c := range chunks {
					if c.Usage != nil {
						t.Errorf("chunk %d has usage without include_usage", i)
					}
				}
				return
			}
			last := chunks[len(chunks)-1]
			if len(last.Choices) != 0 || last.Usage == nil {
				t.Fatalf("usage chunk %+v, want empty choices and usage", last)
			}
			if want := (chatUsage{2 + 4, baseWords, 6 + baseWords}); *last.Usage != want {
				t.Errorf("usage %+v, want %+v", *last.Usage, want)
			}
			// Earlier chunks carry an explicit "usage":null.
			evs := parseSSE(t, ts.post("/v1/chat/completions", body, 200).body)
			for i, ev := range evs[:len(evs)-2] {
				if !strings.HasSuffix(ev.data, `"usage":null}`) {
					t.Errorf("chunk %d lacks \"usage\":null: %s", i, ev.data)
				}
			}
		})
	}
}

func TestChatStreamMatchesNonStream(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		headers []string
		chunks  int
	}{
		{"default", Options{}, nil, DefaultChunks},
		{"one chunk", Options{}, []string{"x-mock-chunks", "1"}, 1},
		{"seven chunks", Options{}, []string{"x-mock-chunks", "7"}, 7},
		{"one word per chunk", Options{}, []string{"x-mock-chunks", strconv.Itoa(baseWords)}, baseWords},
		{"more chunks than base words", Options{}, []string{"x-mock-chunks", "150"}, 150},
		{"flag above base words", Options{Chunks: 100}, nil, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, tt.opts)
			const req = `"messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":true}`
			c := decode[chatCompletion](t, ts.post("/v1/chat/completions", `{`+req+`}`, 200, tt.headers...).body)
			chunks := chatStream(t, ts, `{"stream":true,`+req+`}`, tt.headers...)

			var got strings.Builder
			content := 0
			for _, ch := range chunks {
				if len(ch.Choices) > 0 && ch.Choices[0].Delta.Content != nil && *ch.Choices[0].Delta.Content != "" {
					content++
					got.WriteString(*ch.Choices[0].Delta.Content)
				}
			}
			if content != tt.chunks {
				t.Errorf("%d content chunks, want %d", content, tt.chunks)
			}
			if want := c.Choices[0].Message.Content; got.String() != want {
				t.Errorf("stream content\n%q\nnon-stream\n%q", got.String(), want)
			}
			u := chunks[len(chunks)-1].Usage
			if u == nil || *u != c.Usage {
				t.Errorf("stream usage %+v, non-stream %+v", u, c.Usage)
			}
			if words := len(strings.Fields(got.String())); c.Usage.CompletionTokens != words {
				t.Errorf("completion_tokens %d, content has %d words", c.Usage.CompletionTokens, words)
			}
		})
	}
}
