package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/valyala/fasthttp"

	"github.com/bulkheadhq/bulkhead/cmd/mockllm/mock"
	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/store"
)

// The official OpenAI Go SDK, pointed at the gateway, talks to an
// Anthropic model as to any other: chat, streams, tool calls, errors; the
// records are the chat requests', with Anthropic's usage (cache tokens
// counted in the prompt).
func TestChatCompletionsToAnthropic(t *testing.T) {
	h := messagesHarness(t, nil)
	org, key, _ := h.tenant(1000)
	ctx := context.Background()
	client := oai.NewClient(option.WithBaseURL(h.url+"/v1/"), option.WithAPIKey(key), option.WithMaxRetries(0))
	base := oai.ChatCompletionNewParams{
		Model: "claude-sonnet-4-5",
		Messages: []oai.ChatCompletionMessageParamUnion{
			oai.SystemMessage("You are terse and never helpful."),
			oai.UserMessage("Say hi"),
		},
	}
	weather := oai.ChatCompletionFunctionTool(oai.FunctionDefinitionParam{
		Name:        "get_weather",
		Description: oai.String("the weather of a place"),
		Parameters:  oai.FunctionParameters{"type": "object", "properties": map[string]any{"query": map[string]any{"type": "string"}}},
	})

	t.Run("chat", func(t *testing.T) {
		id := "cm-" + org.String()
		c, err := client.Chat.Completions.New(ctx, base, option.WithHeader("X-Request-Id", id))
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Choices) != 1 || c.Choices[0].Message.Content == "" || c.Choices[0].FinishReason != "stop" ||
			c.Usage.CompletionTokens == 0 || c.Usage.PromptTokensDetails.CachedTokens == 0 || c.Object != "chat.completion" {
			t.Fatalf("completion %+v", c)
		}
		rec := h.rec.find(t, id)
		if rec.OrgID != org || rec.Endpoint != "/v1/chat/completions" || rec.Model != "claude-sonnet-4-5" || rec.Status != 200 ||
			rec.PromptTokens != int(c.Usage.PromptTokens) || rec.CompletionTokens != int(c.Usage.CompletionTokens) ||
			rec.CacheReadTokens != int(c.Usage.PromptTokensDetails.CachedTokens) || rec.UsageSource != "upstream" ||
			rec.Response != c.Choices[0].Message.Content || rec.Upstream != "anthropic" || rec.Attempts != 1 || !strings.Contains(rec.Prompt, "Say hi") {
			t.Errorf("record %+v, usage %+v", rec, c.Usage)
		}
	})

	t.Run("stream with usage", func(t *testing.T) {
		id := "cms-" + org.String()
		p := base
		p.StreamOptions = oai.ChatCompletionStreamOptionsParam{IncludeUsage: oai.Bool(true)}
		stream := client.Chat.Completions.NewStreaming(ctx, p, option.WithHeader("X-Request-Id", id))
		var acc oai.ChatCompletionAccumulator
		chunks := 0
		for stream.Next() {
			acc.AddChunk(stream.Current())
			chunks++
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if chunks < 5 || len(acc.Choices) != 1 || acc.Choices[0].Message.Content == "" || acc.Choices[0].FinishReason != "stop" || acc.Usage.TotalTokens == 0 {
			t.Fatalf("%d chunks, accumulated %+v", chunks, acc.ChatCompletion)
		}
		rec := h.rec.find(t, id)
		if !rec.Stream || rec.Status != 200 || rec.Endpoint != "/v1/chat/completions" || rec.PromptTokens != int(acc.Usage.PromptTokens) ||
			rec.CompletionTokens != int(acc.Usage.CompletionTokens) || rec.CacheReadTokens == 0 || rec.Response != acc.Choices[0].Message.Content {
			t.Errorf("record %+v, usage %+v", rec, acc.Usage)
		}
	})

	t.Run("stream without usage asked", func(t *testing.T) {
		id := "cmn-" + org.String()
		stream := client.Chat.Completions.NewStreaming(ctx, base, option.WithHeader("X-Request-Id", id))
		var acc oai.ChatCompletionAccumulator
		for stream.Next() {
			acc.AddChunk(stream.Current())
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if acc.Usage.TotalTokens != 0 || acc.Choices[0].Message.Content == "" {
			t.Errorf("usage not asked for, or no text: %+v", acc.ChatCompletion)
		}
		if rec := h.rec.find(t, id); rec.CompletionTokens == 0 || rec.UsageSource != "upstream" {
			t.Errorf("record %+v", rec)
		}
	})

	t.Run("tool calls", func(t *testing.T) {
		p := base
		p.Tools = []oai.ChatCompletionToolUnionParam{weather}
		c, err := client.Chat.Completions.New(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		msg := c.Choices[0].Message
		if c.Choices[0].FinishReason != "tool_calls" || len(msg.ToolCalls) != 1 || msg.ToolCalls[0].Function.Name != "get_weather" ||
			msg.ToolCalls[0].Function.Arguments != `{"query":"mock"}` || msg.ToolCalls[0].ID == "" {
			t.Fatalf("completion %+v", c)
		}
		// The tool's result goes back as a tool message: the model answers.
		p.Messages = append(p.Messages, msg.ToParam(), oai.ToolMessage(`{"temp":"12C"}`, msg.ToolCalls[0].ID))
		c2, err := client.Chat.Completions.New(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if c2.Choices[0].FinishReason != "stop" || c2.Choices[0].Message.Content == "" {
			t.Errorf("answer after the tool result %+v", c2)
		}
	})

	t.Run("tool calls streamed", func(t *testing.T) {
		p := base
		p.Tools = []oai.ChatCompletionToolUnionParam{weather}
		stream := client.Chat.Completions.NewStreaming(ctx, p)
		var acc oai.ChatCompletionAccumulator
		for stream.Next() {
			acc.AddChunk(stream.Current())
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		calls := acc.Choices[0].Message.ToolCalls
		if acc.Choices[0].FinishReason != "tool_calls" || len(calls) != 1 || calls[0].Function.Name != "get_weather" || calls[0].Function.Arguments != `{"query":"mock"}` {
			t.Errorf("accumulated %+v", acc.ChatCompletion)
		}
	})

	t.Run("image", func(t *testing.T) {
		p := base
		p.Messages = []oai.ChatCompletionMessageParamUnion{oai.UserMessage([]oai.ChatCompletionContentPartUnionParam{
			oai.TextContentPart("what is this?"),
			oai.ImageContentPart(oai.ChatCompletionContentPartImageImageURLParam{URL: "data:image/png;base64,iVBORw0KGgo="}),
		})}
		if _, err := client.Chat.Completions.New(ctx, p); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("errors are OpenAI's", func(t *testing.T) {
		for name, tc := range map[string]struct {
			opts     []option.RequestOption
			status   int
			contains string
		}{
			"n > 1":         {[]option.RequestOption{option.WithJSONSet("n", 2)}, 400, `"param":"n"`},
			"logprobs":      {[]option.RequestOption{option.WithJSONSet("logprobs", true)}, 400, `"param":"logprobs"`},
			"temperature 2": {[]option.RequestOption{option.WithJSONSet("temperature", 2)}, 400, `"param":"temperature"`},
			"http image": {[]option.RequestOption{option.WithJSONSet("messages", []map[string]any{{"role": "user", "content": []map[string]any{
				{"type": "image_url", "image_url": map[string]any{"url": "http://169.254.169.254/x.png"}}}}})}, 400, `image_url.url`},
			"upstream 400": {[]option.RequestOption{option.WithHeader("X-Stainless-Mock-Status", "400")}, 400, `"type":"invalid_request_error"`},
			"upstream 500": {[]option.RequestOption{option.WithHeader("X-Stainless-Mock-Status", "500")}, 502, `"code":"upstream_error"`},
		} {
			_, err := client.Chat.Completions.New(ctx, base, tc.opts...)
			var apiErr *oai.Error
			if !errors.As(err, &apiErr) || apiErr.StatusCode != tc.status || !strings.Contains(apiErr.RawJSON(), tc.contains) ||
				!strings.Contains(apiErr.RawJSON(), `"request_id"`) || strings.Contains(apiErr.RawJSON(), anthropicKey) {
				t.Errorf("%s: err = %v", name, err)
			}
		}
	})

	if strings.Contains(h.logs.String(), anthropicKey) || strings.Contains(h.logs.String(), key) {
		t.Error("a key reached the log")
	}
}

// hostileAnthropic routes claude-* to handler, an Anthropic upstream.
func hostileAnthropic(t *testing.T, handler fasthttp.RequestHandler) (*harness, string) {
	n := newMemNet(t)
	addr := n.listen(handler)
	h := newFakeHarness(t, n, func(c *config.Config) {
		c.Upstreams = []config.Upstream{{Name: "anthropic", Kind: "anthropic", URL: "http://" + addr, APIKey: anthropicKey, Models: []string{"claude-*"}}}
		c.UpstreamMaxAttempts = 1
	})
	_, key, _ := h.tenant(1000)
	return h, key
}

// A Messages stream that breaks the protocol, is cut before message_stop
// or reports an error event ends the chat stream with an OpenAI error
// event the SDK raises; the request has exactly one record, a 502.
func TestChatToAnthropicHostileStream(t *testing.T) {
	const start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m1\",\"type\":\"message\",\"model\":\"claude-x\",\"content\":[],\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n"
	const delta = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n"
	for name, body := range map[string]string{
		"malformed":         start + "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\n\n",
		"truncated":         start + delta,
		"error event":       start + delta + "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"key " + anthropicKey + "\"}}\n\n",
		"before start":      delta + "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
		"not a message SSE": "data: [DONE]\n\n",
	} {
		t.Run(name, func(t *testing.T) {
			h, key := hostileAnthropic(t, func(rc *fasthttp.RequestCtx) {
				rc.SetContentType("text/event-stream")
				rc.SetBodyString(body)
			})
			client := oai.NewClient(option.WithBaseURL(h.url+"/v1/"), option.WithAPIKey(key), option.WithMaxRetries(0), option.WithHTTPClient(h.httpClient()))
			stream := client.Chat.Completions.NewStreaming(context.Background(), oai.ChatCompletionNewParams{
				Model: "claude-x", Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage("hi")},
			}, option.WithHeader("X-Request-Id", "hostile"))
			for stream.Next() {
			}
			var apiErr *oai.Error
			if err := stream.Err(); err == nil || strings.Contains(err.Error(), anthropicKey) {
				t.Errorf("stream err = %v", err)
			} else if errors.As(err, &apiErr) && strings.Contains(apiErr.RawJSON(), anthropicKey) {
				t.Errorf("the key reached the caller: %s", apiErr.RawJSON())
			}
			rec := h.rec.find(t, "hostile")
			if rec.Status != 502 || !rec.Stream {
				t.Errorf("record %+v", rec)
			}
			assertOneRecord(t, h, "hostile")
		})
	}
}

// A buffered answer that is not a Messages answer is a 502, recorded once;
// an Anthropic error body becomes an OpenAI one, the key scrubbed.
func TestChatToAnthropicHostileAnswer(t *testing.T) {
	for name, tc := range map[string]struct {
		status int
		body   string
		want   int
	}{
		"not a message":     {200, `{"choices":[]}`, 502},
		"truncated json":    {200, `{"id":"m","type":"message","content":[{"type":"te`, 502},
		"error echoing key": {400, `{"type":"error","error":{"type":"invalid_request_error","message":"bad key ` + anthropicKey + `"}}`, 400},
	} {
		t.Run(name, func(t *testing.T) {
			h, key := hostileAnthropic(t, func(rc *fasthttp.RequestCtx) {
				rc.SetContentType("application/json")
				rc.SetStatusCode(tc.status)
				rc.SetBodyString(tc.body)
			})
			r := h.do("POST", "/v1/chat/completions", `{"model":"claude-x","messages":[{"role":"user","content":"hi"}]}`,
				"Authorization", "Bearer "+key, "X-Request-Id", "hostile")
			if r.status != tc.want || !strings.Contains(string(r.body), `{"error":{`) || strings.Contains(string(r.body), anthropicKey) {
				t.Errorf("%d %s", r.status, r.body)
			}
			if rec := h.rec.find(t, "hostile"); rec.Status != tc.want {
				t.Errorf("record %+v", rec)
			}
			assertOneRecord(t, h, "hostile")
		})
	}
}

// assertOneRecord fails unless reqID has exactly one record.
func assertOneRecord(t *testing.T, h *harness, reqID string) {
	t.Helper()
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	var n int
	var recs []store.LogRecord
	for _, r := range h.rec.recs {
		if r.RequestID == reqID {
			n++
			recs = append(recs, r)
		}
	}
	if n != 1 {
		t.Errorf("%d records of %s: %+v", n, reqID, recs)
	}
}

// A caller that leaves a translated stream early stops the upstream; the
// request has one record, 499, with the text that arrived.
func TestChatToAnthropicClientDisconnect(t *testing.T) {
	h := newFakeHarnessWith(t, nil, mock.Options{ChunkDelay: 20 * time.Millisecond, Chunks: 100}, func(c *config.Config) { // a 2s stream
		c.Upstreams = []config.Upstream{{Name: "anthropic", Kind: "anthropic", URL: strings.TrimSuffix(c.UpstreamURL, "/v1"), APIKey: anthropicKey, Models: []string{"claude-*"}}}
	})
	_, key, _ := h.tenant(1000)
	conn, err := h.dial()
	if err != nil {
		t.Fatal(err)
	}
	body := `{"model":"claude-x","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	raw := fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/json\r\nX-Request-Id: tdisconnect\r\nContent-Length: %d\r\n\r\n%s", key, len(body), body)
	start := time.Now()
	if _, err := conn.Write([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	line := ""
	for !strings.Contains(line, `"content":"`) || strings.Contains(line, `"content":""`) { // up to the first text delta
		if line, err = br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(line, "chat.completion.chunk") && strings.HasPrefix(line, "data:") {
			t.Fatalf("not a chat chunk: %s", line)
		}
	}
	conn.Close()
	rec := h.rec.find(t, "tdisconnect")
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Errorf("record after %s: the gateway kept reading the upstream after the caller left", took)
	}
	if rec.Status != statusClientClosed || !rec.Stream || rec.Response == "" {
		t.Errorf("record %+v, want status 499 with the text so far", rec)
	}
	time.Sleep(100 * time.Millisecond) // a second record would come now
	assertOneRecord(t, h, "tdisconnect")
}
