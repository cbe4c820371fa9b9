package gateway

import (
	"context"
	"errors"
	"strings"
	"testing"

	anthropic "github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/valyala/fasthttp"

	"github.com/bulkheadhq/bulkhead/config"
)

const anthropicKey = "sk-ant-provider-SECRET-abcdef0123456789"

// messagesHarness routes claude-* to the mock's Messages API as an
// Anthropic upstream, everything else to the default (OpenAI) upstream.
func messagesHarness(t *testing.T, mod func(*config.Config)) *harness {
	return newFakeHarness(t, loopback{t}, func(c *config.Config) {
		base := strings.TrimSuffix(c.UpstreamURL, "/v1")
		c.Upstreams = []config.Upstream{{Name: "anthropic", Kind: "anthropic", URL: base, APIKey: anthropicKey, Models: []string{"claude-*"}}}
		if mod != nil {
			mod(c)
		}
	})
}

// The official Anthropic Go SDK, pointed at the gateway with a Bulkhead
// key, gets Anthropic's answers, streams and errors; the record has the
// tenant, the usage with cache tokens counted in the prompt, the text.
func TestAnthropicGoSDK(t *testing.T) {
	h := messagesHarness(t, nil)
	org, key, _ := h.tenant(1000)
	ctx := context.Background()
	client := anthropic.NewClient(aoption.WithBaseURL(h.url+"/"), aoption.WithAPIKey(key), aoption.WithMaxRetries(0))
	params := anthropic.MessageNewParams{
		Model:     "claude-sonnet-4-5",
		MaxTokens: 256,
		System:    []anthropic.TextBlockParam{{Text: "You are terse and never helpful."}},
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Say hi"))},
	}

	t.Run("message", func(t *testing.T) {
		m, err := client.Messages.New(ctx, params, aoption.WithHeader("X-Request-Id", "msg-"+org.String()))
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Content) != 1 || m.Content[0].Text == "" || m.StopReason != "end_turn" || m.Usage.OutputTokens == 0 || m.Usage.CacheReadInputTokens == 0 {
			t.Fatalf("message %+v", m)
		}
		rec := h.rec.find(t, "msg-"+org.String())
		in := int(m.Usage.InputTokens + m.Usage.CacheReadInputTokens + m.Usage.CacheCreationInputTokens)
		if rec.OrgID != org || rec.Endpoint != "/v1/messages" || rec.Model != "claude-sonnet-4-5" || rec.Status != 200 ||
			rec.PromptTokens != in || rec.CompletionTokens != int(m.Usage.OutputTokens) || rec.UsageSource != "upstream" ||
			rec.Response != m.Content[0].Text || rec.Upstream != "anthropic" || rec.Attempts != 1 ||
			rec.CacheReadTokens != int(m.Usage.CacheReadInputTokens) || rec.CacheReadTokens == 0 ||
			!strings.Contains(rec.Prompt, `"system"`) || !strings.Contains(rec.Prompt, "Say hi") {
			t.Errorf("record %+v, usage %+v", rec, m.Usage)
		}
	})

	t.Run("stream", func(t *testing.T) {
		stream := client.Messages.NewStreaming(ctx, params, aoption.WithHeader("X-Request-Id", "msgs-"+org.String()))
		var m anthropic.Message
		events := 0
		for stream.Next() {
			if err := m.Accumulate(stream.Current()); err != nil {
				t.Fatal(err)
			}
			events++
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if events < 5 || len(m.Content) != 1 || m.Content[0].Text == "" || m.Usage.OutputTokens == 0 || m.StopReason != "end_turn" {
			t.Fatalf("%d events, message %+v", events, m)
		}
		rec := h.rec.find(t, "msgs-"+org.String())
		in := int(m.Usage.InputTokens + m.Usage.CacheReadInputTokens + m.Usage.CacheCreationInputTokens)
		if !rec.Stream || rec.Status != 200 || rec.PromptTokens != in || rec.CacheReadTokens != int(m.Usage.CacheReadInputTokens) || rec.CompletionTokens != int(m.Usage.OutputTokens) ||
			rec.Response != m.Content[0].Text || rec.UsageSource != "upstream" {
			t.Errorf("record %+v, usage %+v", rec, m.Usage)
		}
	})

	t.Run("errors are Anthropic's", func(t *testing.T) {
		bad := anthropic.NewClient(aoption.WithBaseURL(h.url+"/"), aoption.WithAPIKey("sk_"+org.String()+"_nope"), aoption.WithMaxRetries(0))
		openaiModel := params
		openaiModel.Model = "gpt-4o-mini"
		for name, tc := range map[string]struct {
			call     func() error
			status   int
			typ      string
			contains string
		}{
			"401":                    {func() error { _, err := bad.Messages.New(ctx, params); return err }, 401, "authentication_error", ""},
			"not an Anthropic model": {func() error { _, err := client.Messages.New(ctx, openaiModel); return err }, 404, "not_found_error", "not an Anthropic model"},
			"OpenAI-only member": {func() error {
				_, err := client.Messages.New(ctx, params, aoption.WithJSONSet("n", 2))
				return err
			}, 400, "invalid_request_error", "'n' is an OpenAI parameter"},
			"upstream 500": {func() error {
				_, err := client.Messages.New(ctx, params, aoption.WithHeader("X-Stainless-Mock-Status", "500"))
				return err
			}, 502, "api_error", ""},
			"upstream 400 passes": {func() error {
				_, err := client.Messages.New(ctx, params, aoption.WithHeader("X-Stainless-Mock-Status", "400"))
				return err
			}, 400, "invalid_request_error", ""},
		} {
			err := tc.call()
			var apiErr *anthropic.Error
			if !errors.As(err, &apiErr) || apiErr.StatusCode != tc.status || !strings.Contains(apiErr.RawJSON(), `"type":"`+tc.typ+`"`) ||
				!strings.Contains(apiErr.RawJSON(), tc.contains) || strings.Contains(apiErr.RawJSON(), anthropicKey) {
				t.Errorf("%s: err = %v", name, err)
			}
		}
	})

	t.Run("embeddings to an Anthropic model", func(t *testing.T) {
		r := h.do("POST", "/v1/embeddings", `{"model":"claude-sonnet-4-5","input":"x"}`, "Authorization", "Bearer "+key)
		if r.status != 404 || !strings.Contains(string(r.body), "/v1/messages") || !strings.Contains(string(r.body), `"code":"model_not_found"`) {
			t.Errorf("%d %s", r.status, r.body)
		}
	})

	if strings.Contains(h.logs.String(), anthropicKey) || strings.Contains(h.logs.String(), key) {
		t.Error("a key reached the log")
	}
}

// The provider key is sent as x-api-key with an anthropic-version, never
// the caller's credential; an answer echoing it is scrubbed.
func TestAnthropicUpstreamCredential(t *testing.T) {
	n := newMemNet(t)
	got := make(chan [3]string, 1)
	addr := n.listen(func(rc *fasthttp.RequestCtx) {
		got <- [3]string{string(rc.Request.Header.Peek("X-Api-Key")), string(rc.Request.Header.Peek("Anthropic-Version")), string(rc.Request.Header.Peek("Authorization"))}
		rc.SetContentType("application/json")
		rc.SetBodyString(`{"id":"m","type":"message","role":"assistant","content":[{"type":"text","text":"key ` + anthropicKey + `"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":2}}`)
	})
	h := newFakeHarness(t, n, func(c *config.Config) {
		c.Upstreams = []config.Upstream{{Name: "anthropic", Kind: "anthropic", URL: "http://" + addr, APIKey: anthropicKey, Models: []string{"claude-*"}}}
	})
	_, key, _ := h.tenant(1000)
	r := h.do("POST", "/v1/messages", `{"model":"claude-x","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`, "X-Api-Key", key)
	hdr := <-got
	if hdr != [3]string{anthropicKey, "2023-06-01", ""} {
		t.Errorf("upstream got x-api-key %q, anthropic-version %q, authorization %q", hdr[0], hdr[1], hdr[2])
	}
	if r.status != 200 || strings.Contains(string(r.body), anthropicKey) {
		t.Errorf("%d %s", r.status, r.body)
	}
}
