package gateway

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/bulkheadhq/bulkhead/cmd/mockllm/mock"
	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway/telemetry"
	"github.com/bulkheadhq/bulkhead/ratelimit"
)

// tracedHarness is a fake harness on n (nil: a memNet of its own) whose
// gateway exports its spans to tp (nil: an in-memory exporter, returned);
// claude-* routes to the mock's Messages API.
func tracedHarness(t *testing.T, n *memNet, tp trace.TracerProvider, mod func(*config.Config)) (*harness, *tracetest.InMemoryExporter) {
	t.Helper()
	var exp *tracetest.InMemoryExporter
	if tp == nil {
		exp = tracetest.NewInMemoryExporter()
		tp = sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	}
	if n == nil {
		n = newMemNet(t)
	}
	h := &harness{t: t, net: n, fake: newFakeAuth(), rec: newMemRecorder()}
	h.configure(mock.Options{}, func(c *config.Config) {
		base := strings.TrimSuffix(c.UpstreamURL, "/v1")
		c.Upstreams = append(c.Upstreams, config.Upstream{Name: "anthropic", Kind: "anthropic", URL: base, APIKey: anthropicKey, Models: []string{"claude-*"}})
		if mod != nil {
			mod(c)
		}
	})
	h.limiter = ratelimit.New(nil, ratelimit.Options{})
	h.start(Deps{Auth: h.fake, Recorder: h.rec, Limiter: h.limiter, Tracer: tp})
	return h, exp
}

// spansOf returns the ended spans of the trace whose server span has
// request id reqID, by name.
func spansOf(t *testing.T, exp *tracetest.InMemoryExporter, reqID string) map[string]tracetest.SpanStub {
	t.Helper()
	all := exp.GetSpans()
	var id trace.TraceID
	for _, s := range all {
		if s.SpanKind == trace.SpanKindServer && attr(s, "bulkhead.request_id").AsString() == reqID {
			id = s.SpanContext.TraceID()
		}
	}
	out := map[string]tracetest.SpanStub{}
	for _, s := range all {
		if s.SpanContext.TraceID() == id && id.IsValid() {
			out[s.Name] = s
		}
	}
	return out
}

func attr(s tracetest.SpanStub, key string) attribute.Value {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// A traced chat completion: the server span continues the caller's
// traceparent and carries the GenAI attributes, its children are auth,
// admission and the upstream attempt, whose traceparent reaches the
// upstream; the usage on the span is the record's.
func TestTracingChat(t *testing.T) {
	h, exp := tracedHarness(t, nil, nil, nil)
	_, key, _ := h.tenant(1000)
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	r := h.do("POST", "/v1/chat/completions", `{"model":"gpt-4o-mini","max_tokens":77,"messages":[{"role":"user","content":"PROMPT-TEXT-xyzzy"}]}`,
		"Authorization", "Bearer "+key, "X-Request-Id", "tr-1", "Traceparent", parent)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	rec := h.rec.find(t, "tr-1")
	spans := spansOf(t, exp, "tr-1")
	srv, ok := spans["POST /v1/chat/completions"]
	if !ok {
		t.Fatalf("no server span: %v", spans)
	}
	if srv.SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || srv.Parent.SpanID().String() != "00f067aa0ba902b7" {
		t.Errorf("the caller's traceparent was not continued: trace %s parent %s", srv.SpanContext.TraceID(), srv.Parent.SpanID())
	}
	for k, want := range map[string]any{
		"gen_ai.request.model": "gpt-4o-mini", "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
		"gen_ai.usage.input_tokens": int64(rec.PromptTokens), "gen_ai.usage.output_tokens": int64(rec.CompletionTokens),
		"http.response.status_code": int64(200), "bulkhead.attempts": int64(1), "bulkhead.upstream": "default",
		"gen_ai.request.max_tokens": int64(77),
	} {
		if v := attr(srv, k).AsInterface(); v != want {
			t.Errorf("%s = %v, want %v", k, v, want)
		}
	}
	if fr := attr(srv, "gen_ai.response.finish_reasons").AsStringSlice(); len(fr) != 1 || fr[0] != "stop" {
		t.Errorf("finish reasons %v", fr)
	}
	if attr(srv, "bulkhead.tenant.id").Type() != attribute.EMPTY {
		t.Error("the tenant is on the span though not enabled")
	}
	for _, name := range []string{"auth", "admission", "admission.tokens", "chat gpt-4o-mini"} {
		s, ok := spans[name]
		if !ok || s.Parent.SpanID() != srv.SpanContext.SpanID() {
			t.Errorf("span %s missing or not a child of the server span: %+v", name, s.Parent)
		}
	}
	if a := spans["chat gpt-4o-mini"]; a.SpanKind != trace.SpanKindClient || attr(a, "http.response.status_code").AsInt64() != 200 ||
		attr(a, "server.address").AsString() == "" || attr(a, "gen_ai.provider.name").AsString() != "openai" {
		t.Errorf("attempt span %+v", a)
	}
}

// The upstream gets the attempt span's traceparent, in the caller's trace.
func TestTracingPropagatesUpstream(t *testing.T) {
	n := newMemNet(t)
	got := make(chan string, 1)
	addr := n.listen(func(rc *fasthttp.RequestCtx) {
		got <- string(rc.Request.Header.Peek("Traceparent"))
		rc.SetContentType("application/json")
		rc.SetBodyString(`{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)
	})
	h, exp := tracedHarness(t, n, nil, func(c *config.Config) {
		c.Upstreams = append(c.Upstreams, config.Upstream{Name: "capture", Kind: "openai", URL: "http://" + addr + "/v1", Models: []string{"capture-*"}})
	})
	_, key, _ := h.tenant(1000)
	r := h.do("POST", "/v1/chat/completions", `{"model":"capture-1","messages":[{"role":"user","content":"x"}]}`,
		"Authorization", "Bearer "+key, "X-Request-Id", "tr-2", "Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	tp := <-got
	a := spansOf(t, exp, "tr-2")["chat capture-1"]
	if want := "00-4bf92f3577b34da6a3ce929d0e0e4736-" + a.SpanContext.SpanID().String() + "-01"; tp != want {
		t.Errorf("upstream traceparent %q, want %q", tp, want)
	}
}

// A translated stream: the first byte is an event of the server span, the
// provider is anthropic, cache tokens are counted; a refused request still
// ends its span (401, auth failed); the tenant is there only when enabled;
// no span carries prompt or response text, a key or the provider's key.
func TestTracingStreamAndHygiene(t *testing.T) {
	h, exp := tracedHarness(t, nil, nil, func(c *config.Config) { c.OTelTenantAttribute = true })
	org, key, _ := h.tenant(1000)
	r := h.do("POST", "/v1/chat/completions", `{"model":"claude-x","stream":true,"messages":[{"role":"system","content":"SYSTEM-TEXT-plugh"},{"role":"user","content":"PROMPT-TEXT-xyzzy"}]}`,
		"Authorization", "Bearer "+key, "X-Request-Id", "tr-3")
	if r.status != 200 || !strings.Contains(string(r.body), "[DONE]") {
		t.Fatalf("%d %s", r.status, r.body)
	}
	rec := h.rec.find(t, "tr-3")
	srv := spansOf(t, exp, "tr-3")["POST /v1/chat/completions"]
	events := map[string]bool{}
	for _, e := range srv.Events {
		events[e.Name] = true
	}
	if !events["first_byte"] || attr(srv, "gen_ai.provider.name").AsString() != "anthropic" ||
		attr(srv, "gen_ai.usage.cache_read.input_tokens").AsInt64() != int64(rec.CacheReadTokens) || rec.CacheReadTokens == 0 ||
		attr(srv, "bulkhead.translated_from").AsString() != "/v1/chat/completions" || attr(srv, "bulkhead.stream").AsBool() != true ||
		attr(srv, "bulkhead.tenant.id").AsString() != org.String() {
		t.Errorf("server span %+v", srv)
	}

	bad := h.do("POST", "/v1/chat/completions", `{"model":"claude-x","messages":[]}`, "Authorization", "Bearer sk_"+org.String()+"_nope", "X-Request-Id", "tr-4")
	if bad.status != 401 {
		t.Fatalf("%d", bad.status)
	}
	refused := spansOf(t, exp, "tr-4")
	if s := refused["POST /v1/chat/completions"]; attr(s, "http.response.status_code").AsInt64() != 401 || attr(s, "error.type").AsString() != "invalid_api_key" {
		t.Errorf("refused request's span %+v", s)
	}
	if s, ok := refused["auth"]; !ok || s.Status.Code.String() != "Error" {
		t.Errorf("auth span %+v", s)
	}

	for _, s := range exp.GetSpans() {
		var all []string
		for _, kv := range s.Attributes {
			all = append(all, kv.Value.String())
		}
		for _, e := range s.Events {
			all = append(all, e.Name)
			for _, kv := range e.Attributes {
				all = append(all, kv.Value.String())
			}
		}
		all = append(all, s.Name, s.Status.Description)
		text := strings.Join(all, "\n")
		for _, secret := range []string{"PROMPT-TEXT", "SYSTEM-TEXT", key, anthropicKey, providerKey, "sk_", rec.Response} {
			if secret != "" && strings.Contains(text, secret) {
				t.Errorf("span %s carries %q", s.Name, secret)
			}
		}
	}
}

// Over real OTLP/HTTP: telemetry.New pointed at an in-process receiver
// (BULKHEAD_OTEL_EXPORTER_OTLP_ENDPOINT) delivers the request's spans.
func TestTracingOTLP(t *testing.T) {
	var mu sync.Mutex
	var names []string
	var models []string
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" {
			http.NotFound(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		var req collectortrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, sp := range ss.Spans {
					names = append(names, sp.Name)
					for _, kv := range sp.Attributes {
						if kv.Key == "gen_ai.request.model" {
							models = append(models, kv.Value.GetStringValue())
						}
					}
				}
			}
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(nil) //nolint:errcheck // an empty ExportTraceServiceResponse
	}))
	defer collector.Close()
	cfg := config.Default()
	cfg.OTelExporterOTLPEndpoint = collector.URL
	tp, err := telemetry.New(context.Background(), cfg, "test")
	if err != nil || tp == nil {
		t.Fatal(tp, err)
	}
	h, _ := tracedHarness(t, nil, tp, nil)
	_, key, _ := h.tenant(1000)
	if r := h.do("POST", "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}]}`, "Authorization", "Bearer "+key, "X-Request-Id", "tr-otlp"); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	h.rec.find(t, "tr-otlp")
	if err := tp.Shutdown(context.Background()); err != nil { // flushes
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(strings.Join(names, ","), "POST /v1/chat/completions") || !strings.Contains(strings.Join(models, ","), "gpt-4o-mini") {
		t.Errorf("collector got spans %v, models %v", names, models)
	}
}

// Without a tracer provider the gateway makes no span.
func TestTracingOff(t *testing.T) {
	h := newFakeHarness(t, nil, nil)
	if h.srv.trace != nil {
		t.Fatal("tracing on without a provider")
	}
	cfg := config.Default()
	if tp, err := telemetry.New(context.Background(), cfg, "test"); tp != nil || err != nil {
		t.Errorf("a provider without an endpoint: %v %v", tp, err)
	}
}
