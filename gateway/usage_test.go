package gateway

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/bulkheadhq/bulkhead/config"
)

// inflatedUsageUpstream answers every endpoint, streaming or not, with 1
// prompt and 1 completion token (8 prompt tokens for embeddings) and a
// total_tokens of 999,999.
func inflatedUsageUpstream(t *testing.T) string {
	return listen(t, func(ctx *fasthttp.RequestCtx) {
		stream := bytes.Contains(ctx.PostBody(), []byte(`"stream":true`))
		path := string(ctx.Path())
		switch {
		case strings.HasSuffix(path, "/embeddings"):
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1]}],"usage":{"prompt_tokens":8,"total_tokens":999999}}`)
		case strings.HasSuffix(path, "/responses") && stream:
			ctx.SetContentType("text/event-stream")
			ctx.SetBodyString("event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}\n\n" +
				"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"status\":\"completed\",\"usage\":{\"input_tokens\":1,\"output_tokens\":1,\"total_tokens\":999999}}}\n\n")
		case strings.HasSuffix(path, "/responses"):
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"object":"response","status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":"hi"}]}],"usage":{"input_tokens":1,"output_tokens":1,"total_tokens":999999}}`)
		case stream:
			ctx.SetContentType("text/event-stream")
			ctx.SetBodyString("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n" +
				"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":999999}}\n\ndata: [DONE]\n\n")
		default:
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":999999}}`)
		}
	})
}

// counterValue reads the series of c whose label value is label.
func counterValue(t *testing.T, c prometheus.Collector, label string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// An upstream claiming a total_tokens its prompt and completion counts do
// not add up to is recorded and charged the sum; the claim is only counted
// and logged. Charged as claimed, the first answer would have spent the
// key's whole token budget.
func TestUsageThatDoesNotAddUp(t *testing.T) {
	addr := inflatedUsageUpstream(t)
	h := newHarness(t, func(cfg *config.Config) { cfg.UpstreamURL = "http://" + addr + "/v1" })
	org, _, _ := h.tenant(1000)
	key, _ := h.keyWithTPM(org, 1000, 1000)
	const prompt = "PROMPT-TEXT-NEVER-LOGGED"
	for _, tc := range []struct {
		name, path, body string
		prompt, total    int
	}{
		{"chat", "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"` + prompt + `"}]}`, 1, 2},
		{"chat stream, final usage chunk", "/v1/chat/completions", `{"model":"m","stream":true,"messages":[{"role":"user","content":"` + prompt + `"}]}`, 1, 2},
		{"responses", "/v1/responses", `{"model":"m","input":"` + prompt + `"}`, 1, 2},
		{"responses stream", "/v1/responses", `{"model":"m","stream":true,"input":"` + prompt + `"}`, 1, 2},
		{"embeddings: the total is the prompt", "/v1/embeddings", `{"model":"m","input":"` + prompt + `"}`, 8, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := counterValue(t, h.srv.metrics.discrepant, tc.path)
			r := h.do("POST", tc.path, tc.body, bearer(key)...)
			if r.status != 200 {
				t.Fatalf("status %d %s: the inflated total was charged", r.status, r.body)
			}
			reqID := r.headers["x-request-id"]
			rec := h.rec.find(t, reqID)
			if rec.PromptTokens != tc.prompt || rec.TotalTokens != tc.total || rec.UsageSource != "upstream" {
				t.Errorf("recorded prompt %d completion %d total %d (%s), want prompt %d total %d",
					rec.PromptTokens, rec.CompletionTokens, rec.TotalTokens, rec.UsageSource, tc.prompt, tc.total)
			}
			if got := counterValue(t, h.srv.metrics.discrepant, tc.path) - before; got != 1 {
				t.Errorf("bulkhead_usage_discrepancies_total{endpoint=%q} grew by %v, want 1", tc.path, got)
			}
			var found bool
			for _, line := range strings.Split(h.logs.String(), "\n") {
				var l struct {
					Level, Msg string
					RequestID  string `json:"request_id"`
					Reported   int    `json:"reported_total_tokens"`
				}
				if json.Unmarshal([]byte(line), &l) == nil && l.RequestID == reqID && strings.Contains(l.Msg, "does not add up") {
					found = l.Level == "warn" && l.Reported == 999999
				}
			}
			if !found {
				t.Errorf("no warn line naming request %s and the claimed total in the logs", reqID)
			}
		})
	}
	// Charged as claimed, the first answer alone would exhaust 1,000 tokens.
	if r := h.do("POST", "/v1/chat/completions", `{"model":"m","messages":[]}`, bearer(key)...); r.status != 200 {
		t.Errorf("after five answers worth 16 tokens: status %d %s", r.status, r.body)
	}
	if strings.Contains(h.logs.String(), prompt) {
		t.Error("prompt text in the logs")
	}
}
