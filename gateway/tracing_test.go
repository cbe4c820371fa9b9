package gateway

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/bulkheadhq/bulkhead/cmd/mockllm/mock"
	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/ratelimit"
)

// tracedHarness is the service-free harness with a TracerProvider that
// keeps every ended span, and an upstream in front of the mock that
// notes the traceparent each attempt carries.
type tracedHarness struct {
	*harness
	spans *tracetest.SpanRecorder
	mu    sync.Mutex
	seen  []string // traceparent headers the upstream received
}

func newTracedHarness(t *testing.T, mod func(*config.Config)) *tracedHarness {
	t.Helper()
	th := &tracedHarness{spans: tracetest.NewSpanRecorder()}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(th.spans))
	t.Cleanup(func() { tp.Shutdown(t.Context()) }) //nolint:errcheck // in-memory
	n := newMemNet(t)
	h := &harness{t: t, net: n, fake: newFakeAuth(), rec: newMemRecorder()}
	cfg := h.configure(mock.Options{}, mod)
	up := n.listen(func(rc *fasthttp.RequestCtx) {
		if rc.IsPost() { // not the gateway's own model-list refreshes
			th.mu.Lock()
			th.seen = append(th.seen, string(rc.Request.Header.Peek("Traceparent")))
			th.mu.Unlock()
		}
		h.mock.Handler(rc)
	})
	cfg.UpstreamURL = "http://" + up + "/v1"
	h.cfg = cfg
	h.limiter = ratelimit.New(nil, ratelimit.Options{})
	h.start(Deps{Auth: h.fake, Recorder: h.rec, Limiter: h.limiter, Tracer: tp})
	th.harness = h
	return th
}

// ended waits for the spans of n requests' server spans (a stream's ends
// after its last byte, when the client may already have it) and returns
// every span ended so far.
func (th *tracedHarness) ended(n int) []sdktrace.ReadOnlySpan {
	th.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		spans := th.spans.Ended()
		servers := 0
		for _, s := range spans {
			if s.SpanKind() == trace.SpanKindServer {
				servers++
			}
		}
		if servers >= n || time.Now().After(deadline) {
			return spans
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// A traced request: the server span continues the caller's trace, has
// the GenAI attributes of what was recorded, and parents the spans of
// authentication, admission and the upstream attempt, whose traceparent
// the upstream receives.
func TestTracingRequestSpans(t *testing.T) {
	th := newTracedHarness(t, nil)
	_, key, _ := th.tenant(1000)
	const caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	r := th.do("POST", "/v1/chat/completions", chatBody, "Authorization", "Bearer "+key, "traceparent", caller)
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	spans := th.ended(1)
	byName := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		byName[s.Name()] = s
	}
	srv := byName["POST /v1/chat/completions"]
	if srv == nil {
		t.Fatalf("no server span among %v", names(spans))
	}
	if got := srv.SpanContext().TraceID().String(); got != "0af7651916cd43dd8448eb211c80319c" {
		t.Errorf("trace id %s: the caller's traceparent was not continued", got)
	}
	if got := srv.Parent().SpanID().String(); got != "b7ad6b7169203331" || !srv.Parent().IsRemote() {
		t.Errorf("server span's parent = %s (remote %t), want the caller's span", got, srv.Parent().IsRemote())
	}
	a := attrs(srv)
	for k, want := range map[attribute.Key]any{
		"gen_ai.operation.name":     "chat",
		"gen_ai.request.model":      "gpt-4o-mini",
		"http.response.status_code": int64(200),
		"http.request.method":       "POST",
		"bulkhead.request_id":       r.headers["x-request-id"],
		"bulkhead.attempts":         int64(1),
		"bulkhead.upstream":         "default",
	} {
		if got := a[k].AsInterface(); got != want {
			t.Errorf("server span %s = %v, want %v", k, got, want)
		}
	}
	if a["gen_ai.usage.input_tokens"].AsInt64() <= 0 || a["gen_ai.usage.output_tokens"].AsInt64() <= 0 {
		t.Errorf("usage missing from the server span: %v", a)
	}
	if _, ok := a["bulkhead.organization.id"]; ok {
		t.Error("the organization is on the span though BULKHEAD_OTEL_TENANT_ATTRIBUTE is off")
	}
	for _, name := range []string{"bulkhead.auth", "bulkhead.admission", "bulkhead.admission.tokens", "chat gpt-4o-mini"} {
		c := byName[name]
		if c == nil {
			t.Errorf("no span %q among %v", name, names(spans))
			continue
		}
		if c.Parent().SpanID() != srv.SpanContext().SpanID() {
			t.Errorf("span %q is not a child of the server span", name)
		}
	}
	att := byName["chat gpt-4o-mini"]
	if att != nil {
		aa := attrs(att)
		if att.SpanKind() != trace.SpanKindClient || aa["gen_ai.provider.name"].AsString() != "openai" || aa["server.address"].AsString() == "" ||
			aa["http.response.status_code"].AsInt64() != 200 {
			t.Errorf("attempt span: kind %v, attributes %v", att.SpanKind(), aa)
		}
		th.mu.Lock()
		seen := th.seen
		th.mu.Unlock()
		want := "00-0af7651916cd43dd8448eb211c80319c-" + att.SpanContext().SpanID().String() + "-01"
		if len(seen) != 1 || seen[0] != want {
			t.Errorf("upstream got traceparent %q, want %q (the attempt's span)", seen, want)
		}
	}
	noSecrets(t, spans, key, providerKey, "Say hi")
}

// A stream's server span ends after its last byte and carries the first
// byte as an event and as gen_ai.response.time_to_first_chunk; the
// organization is there when configured.
func TestTracingStream(t *testing.T) {
	th := newTracedHarness(t, func(c *config.Config) { c.OTelTenantAttribute = true })
	org, key, _ := th.tenant(1000)
	r := th.do("POST", "/v1/chat/completions", `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say hi"}]}`,
		"Authorization", "Bearer "+key)
	if r.status != 200 || !strings.Contains(string(r.body), "[DONE]") {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	var srv sdktrace.ReadOnlySpan
	for _, s := range th.ended(1) {
		if s.SpanKind() == trace.SpanKindServer {
			srv = s
		}
	}
	if srv == nil {
		t.Fatal("the stream's server span never ended")
	}
	var first bool
	for _, ev := range srv.Events() {
		first = first || ev.Name == "gen_ai.first_chunk"
	}
	a := attrs(srv)
	if !first || a["gen_ai.response.time_to_first_chunk"].AsFloat64() <= 0 {
		t.Errorf("no first-chunk event or time: events %v, attributes %v", srv.Events(), a)
	}
	if a["gen_ai.request.stream"].AsBool() != true || a["gen_ai.usage.output_tokens"].AsInt64() <= 0 {
		t.Errorf("stream attributes: %v", a)
	}
	if got := a["bulkhead.organization.id"].AsString(); got != org.String() {
		t.Errorf("bulkhead.organization.id = %q, want %s", got, org)
	}
	noSecrets(t, th.spans.Ended(), key, providerKey, "Say hi")
}

// Refused requests are traced too, with the refusal's class and not its
// credential; a 401 is the caller's error, not the server's.
func TestTracingRefusals(t *testing.T) {
	th := newTracedHarness(t, nil)
	const bogus = "sk_00000000-0000-0000-0000-000000000000_notakeynotakeynotakey"
	if r := th.do("POST", "/v1/chat/completions", chatBody, "Authorization", "Bearer "+bogus); r.status != 401 {
		t.Fatalf("status %d", r.status)
	}
	th.do("GET", "/healthz", "")
	spans := th.ended(1)
	var auth, srv sdktrace.ReadOnlySpan
	for _, s := range spans {
		switch s.Name() {
		case "bulkhead.auth":
			auth = s
		case "POST /v1/chat/completions":
			srv = s
		case "GET /healthz", "GET other":
			t.Errorf("health checks are traced: %s", s.Name())
		}
	}
	if auth == nil || srv == nil {
		t.Fatalf("spans %v", names(spans))
	}
	if got := attrs(auth)["error.type"].AsString(); got != "invalid_api_key" {
		t.Errorf("auth span error.type = %q", got)
	}
	if srv.Status().Code != 0 || attrs(srv)["http.response.status_code"].AsInt64() != 401 {
		t.Errorf("server span status %v, attributes %v", srv.Status(), attrs(srv))
	}
	noSecrets(t, spans, bogus)
	// An unknown path is named "other": span names carry no caller's text.
	th.do("POST", "/v1/secret-path-of-the-caller", "{}")
	for _, s := range th.ended(2) {
		if strings.Contains(s.Name(), "secret-path") {
			t.Errorf("span name %q carries the caller's path", s.Name())
		}
	}
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name())
	}
	return out
}

// noSecrets fails if any span's name, attribute or event carries one of
// the texts.
func noSecrets(t *testing.T, spans []sdktrace.ReadOnlySpan, texts ...string) {
	t.Helper()
	for _, s := range spans {
		all := s.Name()
		for _, kv := range s.Attributes() {
			all += " " + kv.Value.String()
		}
		for _, ev := range s.Events() {
			all += " " + ev.Name
			for _, kv := range ev.Attributes {
				all += " " + kv.Value.String()
			}
		}
		for _, text := range texts {
			if strings.Contains(all, text) {
				t.Errorf("span %q carries %q", s.Name(), text)
			}
		}
	}
}
