// Package gateway is Bulkhead's HTTP face: a fasthttp server that
// authenticates the caller, derives the tenant from the credential, admits,
// routes and forwards OpenAI-compatible requests, and answers every failure
// with an OpenAI-shaped error that carries the request id.
package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway/internal/linger"
	"github.com/bulkheadhq/bulkhead/gateway/openai"
)

// Server-side limits that are not (yet) settings. Every one is finite.
const (
	readTimeout    = 30 * time.Second // whole request, headers and body
	idleTimeout    = 90 * time.Second // keep-alive between requests
	readBufferSize = 16 << 10         // caps the request header block; larger gets 431
)

// Server is the gateway's API listener. Create it with New; it is safe for
// concurrent use.
type Server struct {
	cfg     config.Config
	log     *zap.Logger
	access  *zap.Logger // one line per proxied request, without the caller (see New)
	srv     *fasthttp.Server
	reqs    requestIDs
	auth    authenticator
	rec     recorder
	prompts promptReader // nil: no /api/v1 read API
	limiter limiter      // nil: no per-key limits
	catalog catalogViews // nil: no model catalog, the configured routes alone
	budgets budgets      // nil: no dollar budgets
	router  *router
	redact  *redactor

	// base is the parent of every request's context. It is not the
	// RequestCtx (whose Done fires only at shutdown) and outlives handlers,
	// so streams can use it; cancelling it cuts every stream still open.
	base       context.Context
	cancelBase context.CancelFunc
	streams    sync.WaitGroup // stream writers still running
	background sync.WaitGroup // refreshes of the model list (refreshModelsSoon)

	modelList  modelList
	configured int64 // Unix time New ran: the created time of models only the configuration names
	metrics    *metrics
	// upstreamSeries are the upstreams' attempts and circuit states.
	upstreamSeries *upstreamSeries
	// trace makes the requests' spans; nil: tracing off (tracing.go).
	trace *tracing
}

// Deps are the Server's collaborators.
type Deps struct {
	Auth     authenticator // required
	Recorder recorder      // required: one record per finished request
	Prompts  promptReader  // the tenant read API's store; nil disables /api/v1
	// Limiter enforces each key's requests and tokens per minute; nil
	// disables limits.
	Limiter limiter
	// Catalog gives each organization's models, access and prices; nil:
	// the configured routes alone serve every caller.
	Catalog catalogViews
	// Budgets enforces dollar budgets (budget.Enforcer); nil: none.
	Budgets budgets
	// Metrics receives the gateway's series; nil registers them nowhere.
	Metrics prometheus.Registerer
	// UpstreamDial connects to an upstream's host:port (from its URL, with
	// the scheme's port when it names none); TLS, when the URL says https,
	// and the first-byte and idle timeouts still apply on top. nil dials
	// TCP within BULKHEAD_UPSTREAM_CONNECT_TIMEOUT. Tests serve upstreams
	// in memory through it.
	UpstreamDial func(addr string) (net.Conn, error)
	// Tracer exports each request's trace (tracing.go); nil: no tracing,
	// at no cost.
	Tracer trace.TracerProvider
}

// New builds a Server from cfg. log must not be nil.
func New(cfg config.Config, log *zap.Logger, deps Deps) (*Server, error) {
	if deps.Auth == nil || deps.Recorder == nil {
		return nil, errors.New("gateway: Deps.Auth and Deps.Recorder are required")
	}
	r, err := newRouter(cfg, deps.UpstreamDial)
	if err != nil {
		return nil, err
	}
	// The access line has no caller: it is always exchange.record, and
	// finding it shows in the CPU profile under make bench's load.
	s := &Server{cfg: cfg, log: log.Named("gateway"), access: log.Named("access").WithOptions(zap.WithCaller(false)), reqs: newRequestIDs(), auth: deps.Auth, rec: deps.Recorder, prompts: deps.Prompts, limiter: deps.Limiter, catalog: deps.Catalog, budgets: deps.Budgets, router: r}
	s.redact = newRedactor(r.all)
	s.trace = newTracing(deps.Tracer, cfg.OTelTenantAttribute)
	s.base, s.cancelBase = context.WithCancel(context.Background())
	reg := deps.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s.metrics = newMetrics(reg, cfg.MetricsPerTenant, s.modelLabel)
	s.upstreamSeries = newUpstreamSeries(reg)
	r.instrument(cfg, s.upstreamSeries)
	s.configured = time.Now().Unix()
	s.srv = &fasthttp.Server{
		Handler:                      s.handle,
		NoDefaultServerHeader:        true, // no version banner
		ReadTimeout:                  readTimeout,
		IdleTimeout:                  idleTimeout,
		ReadBufferSize:               readBufferSize,
		MaxRequestBodySize:           cfg.MaxRequestBodyBytes,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
		// fasthttp logs a malformed request verbatim, credential and body
		// included: its errors say what went wrong without the bytes, and
		// its log lines lose any text on the way (LibraryLogger).
		SecureErrorLogMessage: true,
		Logger:                NewLibraryLogger(log.Named("fasthttp")),
		ErrorHandler:          s.handleParseError,
	}
	return s, nil
}

// Serve accepts connections on ln until Shutdown. It returns nil after a
// clean shutdown.
func (s *Server) Serve(ln net.Listener) error {
	return s.srv.Serve(linger.Listener(ln))
}

// Shutdown stops accepting connections and lets in-flight requests and
// streams finish until ctx ends; then it cuts the streams still open (they
// are recorded with what arrived), waits for their writers to finish and
// closes the idle connections to the upstreams.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.ShutdownWithContext(ctx)
	s.cancelBase()
	s.streams.Wait()
	s.background.Wait()
	for _, up := range s.router.all {
		up.client.CloseIdleConnections() // else open until idle for 30s
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return nil // the drain deadline passed; the cut streams were recorded
	}
	return err
}

// handle is the one entry point: it assigns the request id, dispatches,
// and turns any error into an OpenAI-shaped response.
func (s *Server) handle(rc *fasthttp.RequestCtx) {
	reqID := s.reqs.from(rc.Request.Header.Peek("X-Request-Id"))
	rc.Response.Header.Set("X-Request-Id", reqID)
	if err := s.route(rc, reqID); err != nil {
		if string(rc.Path()) == "/v1/messages" {
			s.writeAnthropicError(rc, reqID, err)
			return
		}
		s.writeError(rc, reqID, err)
	}
}

func (s *Server) route(rc *fasthttp.RequestCtx, reqID string) error {
	path := rc.Path()
	if ep, ok := openai.EndpointForPath(path); ok {
		if !rc.IsPost() {
			return errMethodNotAllowed
		}
		return s.proxy(rc, reqID, ep, "")
	}
	if bytes.HasPrefix(path, []byte(azurePrefix)) {
		return s.azureRoute(rc, reqID, path)
	}
	if strings.HasPrefix(string(path), "/api/v1/") {
		return s.logAPI(rc, string(path))
	}
	if id, ok := strings.CutPrefix(string(path), "/v1/models/"); ok { // Path is percent-decoded
		if !rc.IsGet() {
			return errMethodNotAllowed
		}
		return s.model(rc, id)
	}
	switch string(path) {
	case "/v1/models":
		if !rc.IsGet() {
			return errMethodNotAllowed
		}
		return s.models(rc)
	case "/healthz":
		if !rc.IsGet() && !rc.IsHead() {
			return errMethodNotAllowed
		}
		rc.SetContentType("application/json")
		rc.SetBodyString(`{"status":"ok"}`)
		return nil
	}
	return errNotFound
}

// handleParseError answers requests fasthttp could not parse (oversized
// body or headers, smuggling attempts, timeouts) in the same error shape.
func (s *Server) handleParseError(rc *fasthttp.RequestCtx, err error) {
	reqID := s.reqs.next()
	rc.Response.Header.Set("X-Request-Id", reqID)
	rc.SetConnectionClose()
	linger.Mark(rc.Conn()) // the rest of the request may still be arriving
	// The error's text may quote the request; only its class is logged.
	s.log.Info("malformed request", zap.String("request_id", reqID), zap.String("remote_addr", rc.RemoteAddr().String()),
		zap.String("error", errorClass(err)))
	var he *HTTPError
	switch {
	case isBodyTooLarge(err):
		he = bodyTooLarge(s.cfg.MaxRequestBodyBytes)
	case isHeaderTooLarge(err):
		he = errHeadersTooLarge
	case isTimeout(err):
		he = errRequestTimeout
	default:
		he = errNotHTTP
	}
	s.writeError(rc, reqID, he)
}

func isBodyTooLarge(err error) bool { return errors.Is(err, fasthttp.ErrBodyTooLarge) }

func isHeaderTooLarge(err error) bool {
	var small *fasthttp.ErrSmallBuffer
	return errors.As(err, &small)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// requestIDs makes request ids: a random per-process prefix and a counter,
// unique across replicas with overwhelming probability and cheap to make.
type requestIDs struct {
	prefix string
	n      *atomic.Uint64
}

func newRequestIDs() requestIDs {
	var b [6]byte
	rand.Read(b[:])
	return requestIDs{prefix: "req_" + hex.EncodeToString(b[:]), n: new(atomic.Uint64)}
}

func (r requestIDs) next() string {
	return r.prefix + strconv.FormatUint(r.n.Add(1), 36)
}

// from keeps the caller's id when it is well-formed (1 to 128 characters of
// [A-Za-z0-9._:-]) and makes a new one otherwise.
func (r requestIDs) from(id []byte) string {
	if len(id) == 0 || len(id) > 128 {
		return r.next()
	}
	for _, c := range id {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-'
		if !ok {
			return r.next()
		}
	}
	return string(id)
}

// RequestIDs makes and checks request ids as the API listener does, for
// the control plane's listener.
type RequestIDs struct{ r requestIDs }

// NewRequestIDs returns a source of ids with a fresh random prefix.
func NewRequestIDs() RequestIDs { return RequestIDs{newRequestIDs()} }

// Next returns a new id.
func (r RequestIDs) Next() string { return r.r.next() }

// From keeps the caller's id when it is well-formed and makes a new one
// otherwise.
func (r RequestIDs) From(id []byte) string { return r.r.from(id) }
