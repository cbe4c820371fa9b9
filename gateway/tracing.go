package gateway

import (
	"context"
	"strconv"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/bulkheadhq/bulkhead/gateway/openai"
)

// OpenTelemetry traces. With a tracer provider (Deps.Tracer, set when
// BULKHEAD_OTEL_EXPORTER_OTLP_ENDPOINT or the standard OTEL_* variables
// are), each proxied request has a server span, continuing the caller's
// W3C traceparent, with child spans for authentication, admission (and the
// token reservation) and each upstream attempt (whose traceparent is sent
// upstream), and an event when the first byte of a stream leaves. The
// attributes follow the GenAI semantic conventions (gen_ai.*) where they
// have a name, and are bulkhead.* otherwise. No prompt or response text,
// no key, token or credential is ever an attribute: only ids, model
// names, counts and statuses. The organization id is an attribute only
// with BULKHEAD_OTEL_TENANT_ATTRIBUTE.
//
// Without a provider s.trace is nil and every call site is skipped by a
// nil check: tracing off costs no allocation and no work.

// Attribute keys: the GenAI semantic conventions' (semconv v1.41), HTTP's,
// and the gateway's own.
const (
	keyOperation      = attribute.Key("gen_ai.operation.name")
	keyProvider       = attribute.Key("gen_ai.provider.name")
	keySystem         = attribute.Key("gen_ai.system") // the name before gen_ai.provider.name, for older backends
	keyRequestModel   = attribute.Key("gen_ai.request.model")
	keyMaxTokens      = attribute.Key("gen_ai.request.max_tokens")
	keyInputTokens    = attribute.Key("gen_ai.usage.input_tokens")
	keyOutputTokens   = attribute.Key("gen_ai.usage.output_tokens")
	keyCacheRead      = attribute.Key("gen_ai.usage.cache_read.input_tokens")
	keyCacheCreation  = attribute.Key("gen_ai.usage.cache_creation.input_tokens")
	keyFinishReasons  = attribute.Key("gen_ai.response.finish_reasons")
	keyMethod         = attribute.Key("http.request.method")
	keyRoute          = attribute.Key("http.route")
	keyStatus         = attribute.Key("http.response.status_code")
	keyServerAddress  = attribute.Key("server.address")
	keyErrorType      = attribute.Key("error.type")
	keyRequestID      = attribute.Key("bulkhead.request_id")
	keyTenant         = attribute.Key("bulkhead.tenant.id")
	keyUpstream       = attribute.Key("bulkhead.upstream")
	keyAttempt        = attribute.Key("bulkhead.attempt")
	keyAttempts       = attribute.Key("bulkhead.attempts")
	keyStream         = attribute.Key("bulkhead.stream")
	keyUsageSource    = attribute.Key("bulkhead.usage_source")
	keyTranslated     = attribute.Key("bulkhead.translated_from")
	eventFirstByte    = "first_byte"
	eventCircuitOpen  = "upstream_circuit_open"
	instrumentationID = "github.com/bulkheadhq/bulkhead/gateway"
)

// tracing makes the gateway's spans.
type tracing struct {
	t      trace.Tracer
	prop   propagation.TraceContext
	tenant bool // BULKHEAD_OTEL_TENANT_ATTRIBUTE
}

// newTracing returns nil without a provider: tracing off.
func newTracing(tp trace.TracerProvider, tenant bool) *tracing {
	if tp == nil {
		return nil
	}
	return &tracing{t: tp.Tracer(instrumentationID), tenant: tenant}
}

// headerCarrier reads and writes W3C trace context in fasthttp headers.
type headerCarrier struct{ h *fasthttp.RequestHeader }

func (c headerCarrier) Get(key string) string { return string(c.h.Peek(key)) }
func (c headerCarrier) Set(key, value string) { c.h.Set(key, value) }
func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, c.h.Len())
	for k := range c.h.All() {
		keys = append(keys, string(k))
	}
	return keys
}

// operation is the GenAI operation of an endpoint.
func operation(ep openai.Endpoint) string {
	switch ep {
	case openai.Completions:
		return "text_completion"
	case openai.Embeddings:
		return "embeddings"
	}
	return "chat" // chat completions, Messages, Responses
}

// provider is the GenAI provider name of an upstream.
func provider(up *upstream) string {
	switch {
	case up.anthropic:
		return "anthropic"
	case up.azure:
		return "azure.ai.openai"
	}
	return "openai"
}

// serverSpanNames are the server spans' names, "POST /v1/...", by endpoint.
var serverSpanNames = func() (names [openai.Messages + 1]string) {
	for ep := openai.ChatCompletions; ep <= openai.Messages; ep++ {
		names[ep] = "POST " + ep.Path()
	}
	return names
}()

// start opens x's server span, continuing the caller's traceparent.
func (tr *tracing) start(rc *fasthttp.RequestCtx, x *exchange) {
	ctx := tr.prop.Extract(context.Background(), headerCarrier{&rc.Request.Header})
	x.tctx, x.span = tr.t.Start(ctx, serverSpanNames[x.ep], trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
		keyMethod.String(fasthttp.MethodPost), keyRoute.String(x.ep.Path()),
		keyOperation.String(operation(x.ep)), keyRequestID.String(x.reqID),
	))
}

// child starts a span of x's request named name; end it with endChild.
func (tr *tracing) child(x *exchange, name string) trace.Span {
	_, sp := tr.t.Start(x.tctx, name)
	return sp
}

// endChild ends a child span with err's outcome.
func endChild(sp trace.Span, err error) {
	if err != nil {
		he := toHTTPError(err)
		sp.SetAttributes(keyStatus.Int(he.Code), keyErrorType.String(errorType(he)))
		sp.SetStatus(codes.Error, he.ErrCode)
	}
	sp.End()
}

// errorType is the error.type of a refusal: its OpenAI code, else status.
func errorType(he *HTTPError) string {
	if he.ErrCode != "" {
		return he.ErrCode
	}
	return strconv.Itoa(he.Code)
}

// parsed notes what the request body said: the model, streaming, and
// the output bound when it sets one.
func (tr *tracing) parsed(x *exchange, maxTokens int) {
	x.span.SetAttributes(keyRequestModel.String(x.model), keyStream.Bool(x.stream))
	if maxTokens > 0 {
		x.span.SetAttributes(keyMaxTokens.Int(maxTokens))
	}
}

// authenticated notes the caller's organization, when enabled.
func (tr *tracing) authenticated(x *exchange) {
	if tr.tenant {
		x.span.SetAttributes(keyTenant.String(x.principal.OrgText))
	}
}

// attempt starts the client span of one upstream attempt, and puts its
// trace context in the upstream request. It ends when the answer's
// headers have arrived (or the attempt failed): a stream's duration is the
// server span's.
func (tr *tracing) attempt(x *exchange, up *upstream, req *fasthttp.Request) trace.Span {
	op := operation(x.ep)
	ctx, sp := tr.t.Start(x.tctx, op+" "+x.model, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		keyOperation.String(op), keyProvider.String(provider(up)), keySystem.String(provider(up)),
		keyRequestModel.String(x.model), keyServerAddress.String(up.hostname()),
		keyUpstream.String(up.name), keyAttempt.Int(x.attempts),
	))
	tr.prop.Inject(ctx, headerCarrier{&req.Header})
	return sp
}

// attemptDone ends an attempt's span with its outcome.
func attemptDone(sp trace.Span, err error, status int) {
	switch {
	case err != nil:
		sp.SetAttributes(keyErrorType.String(errorType(upstreamFailure(err))))
		sp.SetStatus(codes.Error, "upstream unreachable")
	default:
		sp.SetAttributes(keyStatus.Int(status))
		if attemptFailed(nil, status) {
			sp.SetAttributes(keyErrorType.String(strconv.Itoa(status)))
			sp.SetStatus(codes.Error, "upstream answered "+strconv.Itoa(status))
		}
	}
	sp.End()
}

// finish ends x's server span with the request's outcome; record calls it.
func (tr *tracing) finish(x *exchange, status int, res *openai.Result) {
	sp := x.span
	x.span = nil
	attrs := []attribute.KeyValue{keyStatus.Int(status), keyAttempts.Int(x.attempts), keyUsageSource.String(string(res.Usage.Source))}
	if x.provider != "" {
		attrs = append(attrs, keyProvider.String(x.provider), keySystem.String(x.provider), keyUpstream.String(x.upstream))
	}
	if x.wire != x.ep {
		attrs = append(attrs, keyTranslated.String(x.ep.Path()))
	}
	if res.Usage.Source != openai.UsageNone {
		u := res.Usage
		attrs = append(attrs, keyInputTokens.Int(u.PromptTokens), keyOutputTokens.Int(u.CompletionTokens))
		if u.CacheReadTokens > 0 || u.CacheCreationTokens > 0 {
			attrs = append(attrs, keyCacheRead.Int(u.CacheReadTokens), keyCacheCreation.Int(u.CacheCreationTokens))
		}
	}
	if res.FinishReason != "" {
		attrs = append(attrs, keyFinishReasons.StringSlice([]string{res.FinishReason}))
	}
	sp.SetAttributes(attrs...)
	if status >= 500 {
		sp.SetStatus(codes.Error, strconv.Itoa(status))
	}
	sp.End()
}

// abandon ends x's server span for a request refused before it was
// recorded (authentication, limits, a full log).
func (tr *tracing) abandon(x *exchange, err error) {
	sp := x.span
	x.span = nil
	he := toHTTPError(err)
	sp.SetAttributes(keyStatus.Int(he.Code), keyErrorType.String(errorType(he)))
	if he.Code >= 500 {
		sp.SetStatus(codes.Error, he.ErrCode)
	}
	sp.End()
}
