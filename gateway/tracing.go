package gateway

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.41.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/bulkheadhq/bulkhead/gateway/openai"
)

// Tracing. With a TracerProvider in Deps, every request to the API gets a
// server span, continuing the caller's W3C traceparent, with child spans
// for authentication, admission (the request and the token budgets) and
// each upstream attempt, and the stream's first byte as an event. Spans
// follow the OpenTelemetry GenAI semantic conventions (gen_ai.* on the
// server span and the attempts, which are the GenAI client spans) and
// carry no text a caller chose: no prompt, response, key or token, and
// the organization only when BULKHEAD_OTEL_TENANT_ATTRIBUTE says so.
// Without a provider s.tracer is nil and the request path takes none of
// this: a nil check per step, no allocation.

// tracer is the gateway's side of a TracerProvider.
type tracer struct {
	t      trace.Tracer
	prop   propagation.TraceContext
	tenant bool // put the organization id on server spans
}

func newTracer(tp trace.TracerProvider, tenant bool) *tracer {
	if tp == nil {
		return nil
	}
	return &tracer{t: tp.Tracer("github.com/bulkheadhq/bulkhead/gateway"), tenant: tenant}
}

// spanKey is the RequestCtx user value holding the request's server span
// while tracing is on.
const spanKey = "bulkhead.span"

// reqSpan is a request's server span. handle ends it when the handler
// returns, unless the answer is a stream: then the stream's Close does,
// once its last byte has left.
type reqSpan struct {
	span      trace.Span
	ctx       context.Context // carries span, the parent of the child spans
	streaming bool
}

// headerCarrier reads a request's headers for the propagator.
type headerCarrier struct{ h *fasthttp.RequestHeader }

func (c headerCarrier) Get(k string) string { return string(c.h.Peek(k)) }
func (c headerCarrier) Set(k, v string)     { c.h.Set(k, v) }
func (c headerCarrier) Keys() []string {
	var ks []string
	for k := range c.h.All() {
		ks = append(ks, string(k))
	}
	return ks
}

// startRequest opens the server span of an API request, a child of the
// caller's traceparent when it sends a valid one. Health checks are not
// traced.
func (t *tracer) startRequest(rc *fasthttp.RequestCtx, reqID string) *reqSpan {
	if string(rc.Path()) == "/healthz" {
		return nil
	}
	parent := t.prop.Extract(context.Background(), headerCarrier{&rc.Request.Header})
	route, method := spanRoute(string(rc.Path())), string(rc.Method())
	if len(method) > 16 {
		method = "other"
	}
	ctx, span := t.t.Start(parent, method+" "+route, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			semconv.HTTPRequestMethodKey.String(method),
			semconv.HTTPRoute(route),
			attribute.String("bulkhead.request_id", reqID),
		))
	rs := &reqSpan{span: span, ctx: ctx}
	rc.SetUserValue(spanKey, rs)
	return rs
}

// spanRoute is the route of path for a span's name and http.route: the
// API's fixed paths as they are, its paths with ids as templates, and
// anything else "other", so that names stay few and carry no caller's
// text.
func spanRoute(path string) string {
	if _, ok := openai.EndpointForPath([]byte(path)); ok || path == "/v1/models" {
		return path
	}
	for _, prefix := range [...]string{"/v1/models/", azurePrefix, "/api/v1/"} {
		if strings.HasPrefix(path, prefix) {
			return prefix + "{…}"
		}
	}
	return "other"
}

// end closes the server span with the answer's status (5xx marks it an
// error; a caller's mistake does not, per the HTTP conventions).
func (rs *reqSpan) end(status int) {
	rs.span.SetAttributes(semconv.HTTPResponseStatusCode(status))
	if status >= 500 {
		rs.span.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(status)))
		rs.span.SetStatus(codes.Error, "")
	}
	rs.span.End()
}

// spanOf returns the request's server span, or nil when tracing is off.
func spanOf(rc *fasthttp.RequestCtx) *reqSpan {
	rs, _ := rc.UserValue(spanKey).(*reqSpan)
	return rs
}

// child starts a span under the request's server span; end it with
// endChild. Without tracing it returns nil and endChild does nothing.
func (s *Server) child(x *exchange, name string) trace.Span {
	if x.span == nil {
		return nil
	}
	_, span := s.tracer.t.Start(x.span.ctx, name, trace.WithSpanKind(trace.SpanKindInternal))
	return span
}

// endChild ends a span from child, marking err's class on it.
func endChild(span trace.Span, err error) {
	if span == nil {
		return
	}
	if err != nil {
		span.SetAttributes(semconv.ErrorTypeKey.String(errorType(err)))
		span.SetStatus(codes.Error, "")
	}
	span.End()
}

// errorType is a span's error.type for err: the gateway's error code
// (invalid_api_key, rate_limit_exceeded, …), never its message.
func errorType(err error) string {
	he := toHTTPError(err)
	if he.ErrCode != "" {
		return he.ErrCode
	}
	return strconv.Itoa(he.Code)
}

// operation is the GenAI operation of an endpoint.
func operation(ep openai.Endpoint) attribute.KeyValue {
	switch ep {
	case openai.Embeddings:
		return semconv.GenAIOperationNameEmbeddings
	case openai.Completions:
		return semconv.GenAIOperationNameTextCompletion
	default: // chat completions, responses, messages
		return semconv.GenAIOperationNameChat
	}
}

// provider is the GenAI provider of an upstream.
func provider(up *upstream) attribute.KeyValue {
	switch {
	case up.anthropic:
		return semconv.GenAIProviderNameAnthropic
	case up.azure:
		return semconv.GenAIProviderNameAzureAIOpenAI
	default:
		return semconv.GenAIProviderNameOpenAI
	}
}

// startAttempt opens the GenAI client span of one upstream attempt and
// puts its traceparent on the upstream request.
func (s *Server) startAttempt(x *exchange, up *upstream, req *fasthttp.Request) trace.Span {
	if x.span == nil {
		return nil
	}
	op := operation(x.ep)
	ctx, span := s.tracer.t.Start(x.span.ctx, op.Value.AsString()+" "+x.model, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(op, provider(up),
			semconv.GenAIRequestModel(x.model),
			semconv.ServerAddress(up.host),
			attribute.String("bulkhead.upstream", up.name),
			attribute.Int("bulkhead.attempt", x.attempts),
		))
	s.tracer.prop.Inject(ctx, headerCarrier{&req.Header})
	return span
}

// endAttempt ends an attempt's span with its outcome.
func endAttempt(span trace.Span, status int, err error) {
	if span == nil {
		return
	}
	if err != nil {
		span.SetAttributes(semconv.ErrorTypeKey.String(errorType(upstreamFailure(err))))
		span.SetStatus(codes.Error, "")
	} else {
		span.SetAttributes(semconv.HTTPResponseStatusCode(status))
		if attemptFailed(nil, status) {
			span.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(status)))
			span.SetStatus(codes.Error, "")
		}
	}
	span.End()
}

// traceRecord puts what the request log records on the server span:
// model, provider, usage, finish reason, attempts; the organization only
// when configured.
func (s *Server) traceRecord(x *exchange, res openai.Result) {
	span := x.span.span
	span.SetAttributes(operation(x.ep),
		semconv.GenAIRequestModel(x.model),
		semconv.GenAIRequestStream(x.stream),
		semconv.GenAIUsageInputTokens(res.Usage.PromptTokens),
		semconv.GenAIUsageOutputTokens(res.Usage.CompletionTokens),
		attribute.String("bulkhead.usage_source", string(res.Usage.Source)),
		attribute.Int("bulkhead.attempts", x.attempts),
	)
	if res.Usage.CacheCreationTokens > 0 || res.Usage.CacheReadTokens > 0 {
		span.SetAttributes(semconv.GenAIUsageCacheCreationInputTokens(res.Usage.CacheCreationTokens),
			semconv.GenAIUsageCacheReadInputTokens(res.Usage.CacheReadTokens))
	}
	if res.FinishReason != "" {
		span.SetAttributes(semconv.GenAIResponseFinishReasons(res.FinishReason))
	}
	if x.upstream != "" {
		span.SetAttributes(attribute.String("bulkhead.upstream", x.upstream))
	}
	if s.tracer.tenant && x.principal != nil {
		span.SetAttributes(attribute.String("bulkhead.organization.id", x.principal.OrgText))
	}
}

// firstByte marks the moment a stream's first byte left for the caller.
func (x *exchange) firstByte(at time.Time) {
	if x.span == nil {
		return
	}
	d := at.Sub(x.start)
	x.span.span.AddEvent("gen_ai.first_chunk", trace.WithTimestamp(at))
	x.span.span.SetAttributes(semconv.GenAIResponseTimeToFirstChunk(d.Seconds()))
}
