package gateway

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/valyala/fasthttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/cmd/mockllm/mock"
	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/store"
)

// BenchmarkProxyChat measures one proxied non-streaming chat completion
// through the whole gateway (auth from cache, parse, route, forward, parse
// usage, record) against the in-process mock, over loopback. allocs/op
// counts the client, the gateway and the mock together; compare with
// BenchmarkDirectChat, the same request straight to the mock.
func BenchmarkProxyChat(b *testing.B) {
	benchChat(b, true)
}

func BenchmarkDirectChat(b *testing.B) { benchChat(b, false) }

// BenchmarkProxyChatCatalog is BenchmarkProxyChat with the model catalog
// on, the request naming a shared catalog model: the catalog's decision
// comes from the in-process view, so it should cost no round trip
// (compare with BenchmarkProxyChat in the same run).
func BenchmarkProxyChatCatalog(b *testing.B) {
	h := newBenchHarness(b)
	h.withCatalog()
	_, key, _ := h.tenant(1_000_000_000)
	model := "bench-" + uuid.NewString()[:8]
	if _, err := h.admin.AddModel(context.Background(), store.Model{Name: model, Upstream: "default", InputPrice: 150_000, OutputPrice: 600_000, Enabled: true}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { h.admin.RemoveModel(context.Background(), store.ModelRef{Name: model}) }) //nolint:errcheck // best effort
	run(b, h.url, key, strings.Replace(chatBody, "gpt-4o-mini", model, 1))
}

func BenchmarkProxyChatStream(b *testing.B) {
	h := newBenchHarness(b)
	_, key, _ := h.tenant(1_000_000_000)
	run(b, h.url, key, `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say hi"}]}`)
}

func benchChat(b *testing.B, viaGateway bool) {
	h := newBenchHarness(b)
	_, key, _ := h.tenant(1_000_000_000)
	url := h.url
	if !viaGateway {
		url = "http://" + strings.TrimSuffix(strings.TrimPrefix(h.cfg.UpstreamURL, "http://"), "/v1")
		key = ""
	}
	run(b, url, key, chatBody)
}

func run(b *testing.B, url, key, body string) { runPath(b, url, "/v1/chat/completions", key, body) }

func runPath(b *testing.B, url, path, key, body string) {
	addr := strings.TrimPrefix(url, "http://")
	c := &fasthttp.HostClient{Addr: addr, Dial: func(a string) (net.Conn, error) { return net.Dial("tcp", a) }}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	req.SetRequestURI(url + path)
	req.Header.SetMethod("POST")
	req.Header.SetContentType("application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.SetBodyString(body)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
			b.Fatalf("%v %d %s", err, resp.StatusCode(), resp.Body())
		}
	}
}

// BenchmarkProxyChatAnthropic is BenchmarkProxyChat for an Anthropic
// model: the chat body translated to a Messages body, the answer back
// (chatmessages.go). Compare with BenchmarkProxyMessages, the same
// conversation sent natively to /v1/messages and passed through, in the
// same run.
func BenchmarkProxyChatAnthropic(b *testing.B) {
	h := anthropicBenchHarness(b)
	_, key, _ := h.tenant(1_000_000_000)
	runPath(b, h.url, "/v1/chat/completions", key, `{"model":"claude-x","max_tokens":256,"messages":[{"role":"user","content":"Say hi"}]}`)
}

// BenchmarkProxyMessages is the native passthrough of the same request.
func BenchmarkProxyMessages(b *testing.B) {
	h := anthropicBenchHarness(b)
	_, key, _ := h.tenant(1_000_000_000)
	runPath(b, h.url, "/v1/messages", key, `{"model":"claude-x","max_tokens":256,"messages":[{"role":"user","content":"Say hi"}]}`)
}

// BenchmarkProxyChatAnthropicStream and BenchmarkProxyMessagesStream are
// the streamed pair.
func BenchmarkProxyChatAnthropicStream(b *testing.B) {
	h := anthropicBenchHarness(b)
	_, key, _ := h.tenant(1_000_000_000)
	runPath(b, h.url, "/v1/chat/completions", key, `{"model":"claude-x","max_tokens":256,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Say hi"}]}`)
}

func BenchmarkProxyMessagesStream(b *testing.B) {
	h := anthropicBenchHarness(b)
	_, key, _ := h.tenant(1_000_000_000)
	runPath(b, h.url, "/v1/messages", key, `{"model":"claude-x","max_tokens":256,"stream":true,"messages":[{"role":"user","content":"Say hi"}]}`)
}

// anthropicBenchHarness routes claude-* to the mock's Messages API.
func anthropicBenchHarness(b *testing.B) *harness {
	h := newHarnessWith(b, mock.Options{}, func(c *config.Config) {
		c.Upstreams = []config.Upstream{{Name: "anthropic", Kind: "anthropic", URL: strings.TrimSuffix(c.UpstreamURL, "/v1"), APIKey: anthropicKey, Models: []string{"claude-*"}}}
	})
	h.rec.discard = true
	return h
}

// BenchmarkProxyChatTracing is BenchmarkProxyChat with tracing off and on,
// in the same run on one harness (two gateways): "on" has the SDK's
// tracer provider with its batch processor, every request sampled, the
// spans handed to an exporter that drops them (the OTLP export itself runs
// off the request path, in the batcher's goroutine). Compare ns/op and
// allocs/op between the two.
func BenchmarkProxyChatTracing(b *testing.B) {
	h := newBenchHarness(b)
	_, key, _ := h.tenant(1_000_000_000)
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	b.Cleanup(func() { tp.Shutdown(context.Background()) }) //nolint:errcheck // nothing to flush
	srv, err := New(h.cfg, zap.NewNop(), h.deps(Deps{Auth: h.auth, Recorder: h.rec, Prompts: h.st, Limiter: h.limiter, Tracer: tp}))
	if err != nil {
		b.Fatal(err)
	}
	traced := h.serve(srv)
	b.Run("off", func(b *testing.B) { run(b, h.url, key, chatBody) })
	b.Run("on", func(b *testing.B) { run(b, traced.url, key, chatBody) })
}
