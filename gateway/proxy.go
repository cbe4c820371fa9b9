package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/gateway/budget"
	"github.com/bulkheadhq/bulkhead/gateway/catalog"
	"github.com/bulkheadhq/bulkhead/gateway/openai"
	"github.com/bulkheadhq/bulkhead/gateway/translate"
	"github.com/bulkheadhq/bulkhead/ratelimit"
	"github.com/bulkheadhq/bulkhead/store"
)

// recorder receives one record per finished request (store.Writer).
// Record must not block the request path for long; Admit says, before a
// request is forwarded, whether its record can be taken.
type recorder interface {
	Record(store.LogRecord)
	Admit() error
}

var _ recorder = (*store.Writer)(nil)

// exchange is one proxied request: what the stream writer and the
// recorder need once the handler has returned. It holds no reference to
// the RequestCtx.
type exchange struct {
	start     time.Time
	reqID     string
	principal *auth.Principal
	ep        openai.Endpoint
	// wire is the API spoken to the upstream: ep, or Messages for a chat
	// completion translated for an Anthropic model (chatmessages.go).
	wire      openai.Endpoint
	model     string
	prompt    string
	stream    bool
	dropUsage bool
	upstream  string // the name of the upstream that answered (else the last tried)
	attempts  int    // upstream attempts made (attempts.go)
	// catalog is the catalog model served (its prices), nil for a model
	// only the configured routes name.
	catalog *catalog.Model
	// endUser is the caller's end user: the JWT's user_id claim, else the
	// body's "user" (enduser.go); "" for none.
	endUser string
	// reservation is the tokens set aside for the request, settled in
	// record.
	reservation ratelimit.Reservation
	// span is the request's server span and tctx its context, nil without
	// tracing (tracing.go); record ends it. provider is the GenAI
	// provider of the last upstream tried.
	span     trace.Span
	tctx     context.Context
	provider string
	// budget is the cost set aside from the dollar budgets (budgets.go),
	// held until record settles it.
	budget     budget.Reservation
	budgetHeld bool
}

// record hands the finished request to the request log and writes the
// access log line: ids, model, status, latency and tokens, never text.
func (x *exchange) record(s *Server, status int, res openai.Result) {
	switch {
	case res.Usage.Source == openai.UsageUpstream:
	case status == fasthttp.StatusOK || res.TextBytes > 0:
		res.EstimateIfMissing(x.prompt) // an answer without reported usage
	default:
		res.Usage = openai.Usage{Source: openai.UsageNone} // nothing was generated
	}
	s.flagDiscrepancy(x, res.Usage)
	if x.span != nil {
		s.trace.finish(x, status, &res)
	}
	latency := time.Since(x.start)
	prices, priced := priceOf(x)
	var cost store.MicroUSD
	if priced {
		cost = costOf(prices, res.Usage)
	}
	s.rec.Record(store.LogRecord{
		OrgID: x.principal.Org, KeyID: x.principal.KeyID, RequestID: x.reqID,
		Endpoint: x.ep.Path(), Model: x.model,
		Prompt: capText(x.prompt, s.cfg.CaptureMaxBytes), Response: capText(res.Text, s.cfg.CaptureMaxBytes),
		PromptTokens: res.Usage.PromptTokens, CompletionTokens: res.Usage.CompletionTokens,
		TotalTokens: res.Usage.TotalTokens, UsageSource: string(res.Usage.Source),
		Status: status, Latency: latency, Stream: x.stream, CreatedAt: x.start,
		Upstream: x.upstream, Attempts: x.attempts,
		CacheCreationTokens: res.Usage.CacheCreationTokens, CacheReadTokens: res.Usage.CacheReadTokens,
		EndUser: x.endUser, Priced: priced, Prices: prices, Cost: cost,
	})
	s.metrics.observe(x, status, latency, res.Usage.PromptTokens, res.Usage.CompletionTokens)
	if priced {
		s.metrics.cost.add(x, cost)
	}
	s.settle(x, res.Usage.TotalTokens)
	s.settleBudget(x, cost)
	if ce := s.access.Check(zap.InfoLevel, "request"); ce != nil {
		ce.Write(
			zap.String("request_id", x.reqID),
			zap.String("org", x.principal.OrgText),
			zap.String("key", x.principal.KeyText()),
			zap.String("endpoint", x.ep.Path()),
			zap.String("model", x.model),
			zap.Bool("stream", x.stream),
			zap.Int("status", status),
			zap.Duration("latency", latency),
			zap.Int("prompt_tokens", res.Usage.PromptTokens),
			zap.Int("completion_tokens", res.Usage.CompletionTokens),
			zap.String("usage_source", string(res.Usage.Source)),
			zap.String("upstream", x.upstream),
			zap.Int("attempts", x.attempts),
		)
	}
}

// capText bounds text for the request log and drops NUL bytes, which
// PostgreSQL text refuses (JSON can carry them escaped as \u0000).
func capText(s string, limit int) string {
	if len(s) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(s[cut]) { // do not split a rune
			cut--
		}
		s = s[:cut]
	}
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "")
	}
	return s
}

// proxy serves one OpenAI API call: authenticate, parse, route, forward,
// answer (streaming as it arrives), record. dep is the Azure deployment the
// path named (azure.go), "" on the /v1 paths.
func (s *Server) proxy(rc *fasthttp.RequestCtx, reqID string, ep openai.Endpoint, dep string) (err error) {
	x := &exchange{start: time.Now(), reqID: reqID, ep: ep, wire: ep}
	if s.trace != nil {
		s.trace.start(rc, x)
		defer func() {
			if err != nil && x.span != nil { // refused before it was recorded
				s.trace.abandon(x, err)
			}
		}()
	}
	// No per-request deadline here or in admit: each look-up below them is
	// bounded by its own timeout (the auth cache's Redis and database
	// timeouts, the limiter's BULKHEAD_REDIS_TIMEOUT), and a deadline
	// context costs every request a timer and a registration on s.base.
	var sp trace.Span
	if x.span != nil {
		sp = s.trace.child(x, "auth")
	}
	p, err := s.authenticate(s.base, rc)
	if sp != nil {
		endChild(sp, err)
	}
	if err != nil {
		return err
	}
	x.principal = p
	x.endUser = p.EndUser
	s.prefetch(p.Org, x.start)
	if x.span != nil {
		s.trace.authenticated(x)
		sp = s.trace.child(x, "admission")
	}
	// Limits apply before any work, malformed requests included: a key
	// cannot fill the request log faster than its limit allows. A refused
	// request is not a request of the log.
	err = s.admit(rc, p)
	if sp != nil {
		endChild(sp, err)
	}
	if err != nil {
		return err
	}

	body := rc.PostBody()
	if dep != "" {
		body, err = s.deploymentBody(dep, body)
	}
	var r openai.Request
	if err == nil {
		r, err = openai.ParseRequest(ep, body)
	}
	if err != nil {
		var re *openai.RequestError
		if errors.As(err, &re) {
			err = invalidRequest(re)
		}
		x.record(s, fasthttp.StatusBadRequest, openai.Result{})
		return err
	}
	x.model, x.prompt, x.stream = r.Model, r.Prompt, r.Stream
	if x.endUser == "" { // the token's user_id claim first: the body is the caller's word
		x.endUser = r.User
	}
	if x.span != nil {
		s.trace.parsed(x, r.MaxOutputTokens)
	}

	up, cm, he := s.resolve(p, r.Model, x.start)
	if he != nil {
		x.record(s, he.Code, openai.Result{})
		return he
	}
	var conv *translated
	if !up.serves(ep) {
		if conv, body, err = s.translateRequest(x, up, body); err != nil {
			he := toHTTPError(err)
			x.record(s, he.Code, openai.Result{})
			return he
		}
	}
	x.catalog = cm
	if err := s.rec.Admit(); err != nil {
		return withCause(errLogFull, err) // nothing accepted is ever dropped: refuse instead
	}
	if err := s.reserveBudget(rc, x, r); err != nil {
		return err
	}
	// From here on every path records, which settles the reservations.
	if x.span != nil {
		sp = s.trace.child(x, "admission.tokens")
	}
	err = s.reserve(rc, x, r)
	if sp != nil {
		endChild(sp, err)
	}
	if err != nil {
		s.settleBudget(x, 0)
		return err
	}

	if r.Stream && ep.StreamUsageOptIn() && !r.IncludeUsage && conv == nil {
		if b, injected, err := openai.WithStreamUsage(body); err == nil {
			body, x.dropUsage = b, injected
		}
	}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	release := func() {
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
	s.metrics.overhead.Observe(time.Since(x.start).Seconds())
	up, err = s.forward(rc, x, up, body, r.Stream, req, resp)
	if err != nil {
		release()
		he := toHTTPError(err)
		x.record(s, he.Code, openai.Result{})
		return he
	}
	status := resp.StatusCode()
	if r.Stream && status == fasthttp.StatusOK && bytes.HasPrefix(resp.Header.ContentType(), []byte("text/event-stream")) && decodable(resp) {
		s.stream(rc, x, resp, release, conv)
		return nil
	}
	defer release()
	if conv != nil {
		return s.respondTranslated(rc, x, up, resp)
	}
	return s.respond(rc, x, up, resp)
}

// respond copies a buffered (non-streaming or failed) upstream answer.
func (s *Server) respond(rc *fasthttp.RequestCtx, x *exchange, up *upstream, resp *fasthttp.Response) error {
	body, err := readUpstreamBody(resp, maxUpstreamBody)
	if err != nil {
		he := upstreamFailure(err)
		x.record(s, he.Code, openai.Result{})
		return he
	}
	status := resp.StatusCode()
	switch {
	case status >= 200 && status < 300:
		res := openai.ParseResponse(x.ep, body, s.cfg.CaptureMaxBytes)
		copyResponseHeaders(&rc.Response.Header, &resp.Header)
		body = s.scrubResponse(x, &rc.Response.Header, body, &res)
		rc.SetStatusCode(status)
		rc.SetBody(body)
		x.record(s, status, res)
		return nil
	case status == fasthttp.StatusUnauthorized || status == fasthttp.StatusForbidden:
		x.record(s, fasthttp.StatusBadGateway, openai.Result{})
		return withCause(errUpstreamAuth, errors.New("upstream "+up.name+" answered "+fasthttp.StatusMessage(status)))
	case status >= 400 && status < 500:
		// The caller's mistake as the provider saw it: pass it on, scrubbed.
		copyResponseHeaders(&rc.Response.Header, &resp.Header)
		rc.SetStatusCode(status)
		rc.SetBody(s.scrubError(x, &rc.Response.Header, body))
		x.record(s, status, openai.Result{})
		return nil
	case status == fasthttp.StatusGatewayTimeout:
		x.record(s, status, openai.Result{})
		return withCause(errUpstreamTimeout, errors.New("upstream "+up.name+" answered 504"))
	default: // 3xx (never followed) and 5xx
		x.record(s, fasthttp.StatusBadGateway, openai.Result{})
		return withCause(errUpstream, errors.New("upstream "+up.name+" answered "+fasthttp.StatusMessage(status)))
	}
}

// readBounded returns the whole response body, reading a stream if the
// response is one, but never more than limit bytes.
func readBounded(resp *fasthttp.Response, limit int) ([]byte, error) {
	if !resp.StreamBody {
		return resp.Body(), nil
	}
	r := resp.BodyStream()
	if r == nil {
		return resp.Body(), nil
	}
	b, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	resp.CloseBodyStream() //nolint:errcheck // the body is read or abandoned either way
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, errors.New("upstream response too large")
	}
	return b, nil
}

// streamBufSize is the read size of a stream: one upstream read is
// forwarded and flushed as soon as it arrives.
const streamBufSize = 16 << 10

// errShuttingDown cuts streams still open at the drain deadline.
var errShuttingDown = errors.New("gateway shutting down")

// stream answers with an SSE body that fasthttp pulls through sseBody on
// the connection's own goroutine, after the handler has returned.
// conv, when set, translates a Messages stream into chat chunks
// (chatmessages.go).
func (s *Server) stream(rc *fasthttp.RequestCtx, x *exchange, resp *fasthttp.Response, release func(), conv *translated) {
	copyResponseHeaders(&rc.Response.Header, &resp.Header)
	rc.Response.Header.Set(fasthttp.HeaderCacheControl, "no-cache")
	rc.Response.Header.Set("X-Accel-Buffering", "no")
	rc.SetStatusCode(fasthttp.StatusOK)

	b := sseBodyPool.Get().(*sseBody)
	b.s, b.x, b.release, b.conn, b.status = s, x, release, rc.Conn(), fasthttp.StatusOK
	b.upstream = upstreamStream(resp, maxUpstreamBody)
	b.tee = openai.AcquireStreamTee(x.wire, x.dropUsage, s.cfg.CaptureMaxBytes)
	if conv != nil {
		if b.conv == nil {
			b.conv = new(translate.Stream)
		}
		b.conv.Reset(conv.includeUsage, x.start.Unix())
		b.translating = true
	}
	b.tee.SetSecrets(s.redact.secrets)
	s.scrubStreamHeaders(x, &rc.Response.Header)
	s.streams.Add(1)
	b.stopCut = context.AfterFunc(s.base, func() {
		b.cut.Store(true)
		if b.upstream != nil {
			b.upstream.CloseWithError(errShuttingDown) //nolint:errcheck // interrupts a blocked read
		}
	})
	rc.SetBodyStream(b, -1)
}

// sseBody forwards an upstream SSE body event by event as it arrives,
// unchanged but for the dropped usage chunk, teeing a bounded copy into the
// recorder. fasthttp calls WriteTo (each Write is one flushed chunk), then
// Close. It holds no reference to the RequestCtx, only to the connection,
// for write deadlines against callers that stop reading.
type sseBody struct {
	s        *Server
	x        *exchange
	upstream fasthttp.ReadCloserWithError
	tee      *openai.StreamTee
	conn     net.Conn
	release  func()
	stopCut  func() bool
	cut      atomic.Bool // the drain deadline passed: the gateway cut the stream
	status   int
	recorded bool // the request's record is made (see recordOnce)
	readErr  error
	// conv translates the stream (a chat completion of an Anthropic model,
	// chatmessages.go) when translating is set; convErr is its first error.
	conv        *translate.Stream
	translating bool
	convErr     error
	buf         [streamBufSize]byte
	out         []byte // forwarded bytes of one upstream read
}

var sseBodyPool = sync.Pool{New: func() any { return &sseBody{out: make([]byte, 0, streamBufSize)} }}

// SupportsBodyWriteTo tells fasthttp to use WriteTo rather than Read.
func (b *sseBody) SupportsBodyWriteTo() bool { return true }

// WriteTo copies the stream to w, one flushed chunk per upstream read.
func (b *sseBody) WriteTo(w io.Writer) (int64, error) {
	var total int64
	write := func(p []byte) error {
		if len(p) == 0 {
			return nil
		}
		b.conn.SetWriteDeadline(time.Now().Add(b.s.cfg.UpstreamIdleTimeout)) //nolint:errcheck // a dead conn fails the write
		n, err := w.Write(p)
		if total == 0 && err == nil {
			b.s.metrics.ttfb.Observe(time.Since(b.x.start).Seconds())
		}
		total += int64(n)
		return err
	}
	collect := func(ev []byte) error {
		if b.translating {
			return b.translateEvents(ev)
		}
		b.out = append(b.out, ev...)
		return nil
	}
	for b.upstream != nil {
		n, err := b.upstream.Read(b.buf[:])
		if n > 0 {
			b.out = b.out[:0]
			if total == 0 && b.x.span != nil {
				b.x.span.AddEvent(eventFirstByte) // before the first bytes leave (and the span ends with a short stream's record)
			}
			// openai.ErrSecret, or a translation's error (b.convErr).
			// (Keeping the error itself would move collect to the heap: it
			// may be forward's.)
			failed := b.tee.Write(b.buf[:n], collect) != nil
			secret := failed && b.convErr == nil
			if b.tee.Ended() && !failed {
				b.recordOnce() // before the terminal event leaves
			}
			if werr := write(b.out); werr != nil {
				b.status = statusClientClosed // the caller went away: Close stops the upstream too
				return total, werr
			}
			if secret {
				b.readErr, b.status = openai.ErrSecret, fasthttp.StatusBadGateway
				break
			}
			if b.convErr != nil {
				b.readErr, b.status = b.convErr, fasthttp.StatusBadGateway
				break
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				b.readErr, b.status = err, fasthttp.StatusBadGateway
				if b.cut.Load() {
					b.status = fasthttp.StatusServiceUnavailable
				}
			}
			break
		}
	}
	b.out = b.out[:0]
	if b.convErr == nil && b.tee.Flush(collect) != nil { // as Write
		b.readErr, b.status = openai.ErrSecret, fasthttp.StatusBadGateway
		if b.convErr != nil {
			b.readErr = b.convErr
		}
	}
	if b.readErr == nil && b.translating && !b.conv.Done() {
		b.readErr, b.status = errStreamTruncated, fasthttp.StatusBadGateway
	}
	if b.readErr != nil {
		if b.convErr != nil || errors.Is(b.readErr, errStreamTruncated) {
			b.s.log.Warn("upstream stream not translatable", zap.String("request_id", b.x.reqID), zap.Error(b.readErr))
			he := errStreamUntranslatable
			if errors.Is(b.readErr, errStreamTruncated) {
				he = errStreamTruncated
			}
			b.out = append(b.out, streamError(b.x, he)...)
		} else if errors.Is(b.readErr, openai.ErrSecret) {
			b.s.credentialWithheld(b.x, leakStream)
			b.out = append(b.out, streamError(b.x, errCredentialInStream)...)
		} else if b.cut.Load() {
			b.out = append(b.out, streamError(b.x, errShutdownCut)...)
		} else {
			b.s.log.Warn("upstream stream broke", zap.String("request_id", b.x.reqID), zap.Error(b.readErr))
			b.out = append(b.out, streamError(b.x, errStreamBroke)...)
		}
	}
	b.recordOnce() // before the last bytes and the end of the body leave
	if err := write(b.out); err != nil {
		b.status = statusClientClosed
		return total, err
	}
	return total, nil
}

// recordOnce records the request with what the stream delivered so far.
// WriteTo calls it before it forwards the stream's terminal event, or its
// last bytes, so that (like a buffered answer, recorded before the handler
// returns) a stream the caller saw complete is in the request log's
// journal before the caller has it all: a crash after that loses no row.
// A stream the caller left early is recorded by Close, with 499.
func (b *sseBody) recordOnce() {
	if !b.recorded {
		b.recorded = true
		b.x.record(b.s, b.status, b.tee.Result())
	}
}

// Read is the fallback fasthttp never takes for chunked bodies; it exists
// so that sseBody is an io.Reader.
func (b *sseBody) Read([]byte) (int, error) { return 0, errors.New("sseBody: use WriteTo") }

// Close releases the upstream and records the request. fasthttp calls it
// once the body is written or abandoned.
func (b *sseBody) Close() error {
	if b.upstream != nil {
		var cerr error
		if b.status != fasthttp.StatusOK {
			cerr = errors.New("stream abandoned")
		}
		b.upstream.CloseWithError(cerr) //nolint:errcheck // releasing the upstream connection
	}
	b.recordOnce()
	b.stopCut()
	openai.ReleaseStreamTee(b.tee)
	b.release()
	s := b.s
	*b = sseBody{out: b.out[:0], conv: b.conv}
	sseBodyPool.Put(b)
	s.streams.Done()
	return nil
}

// streamError ends x's stream with an error event in its API's shape.
func streamError(x *exchange, he *HTTPError) []byte {
	if x.ep == openai.Messages {
		return anthropicStreamErrorEvent(x.reqID, he)
	}
	return streamErrorEvent(x.reqID, he)
}

// streamErrorEvent ends a stream with an error event, in the shape the
// OpenAI SDKs raise as an API error.
func streamErrorEvent(reqID string, he *HTTPError) []byte {
	return append(append([]byte("event: error\ndata: "), marshalError(he, reqID)...), "\n\n"...)
}
