// Package control is Bulkhead's control plane: the admin API under
// /admin/v1/, its OpenAPI document at /openapi.json and the web console at
// /, on a listener of their own (BULKHEAD_CONTROL_LISTEN), apart from the
// OpenAI-compatible API and from the metrics and pprof listener.
//
// Two kinds of caller act here. Operators hold a token made by `bulkhead
// admin-token create` (only its hash is stored), with the scope read or
// write; their actions run as the owner role through store.Admin, the
// functions the CLI runs. Tenant administrators hold a JWT of the
// gateway's JWT configuration with an organization_id and the role claim
// "admin"; their actions run as the app role inside their own
// organization's tenant context (store.TenantAdmin), with the same
// statements, so that row-level security, not this package, keeps them
// to their own organization: another organization's id is not found,
// exactly like a missing one. An organization admin key (adminkeys.go) is
// the same tenant administrator without a JWT. The console logs in with
// any of them and then holds a session token of its own, sent in a header
// (never a cookie, so no request can be forged from another site), kept
// in Redis when there is one (session_redis.go). Refused credentials are
// throttled (throttle.go).
package control

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/gateway"
	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/gateway/internal/linger"
	"github.com/bulkheadhq/bulkhead/store"
)

// Limits of the control listener. Every one is finite.
const (
	maxBodyBytes   = 64 << 10 // admin requests are small JSON objects
	readTimeout    = 30 * time.Second
	idleTimeout    = 90 * time.Second
	requestTimeout = 30 * time.Second // database work of one request
)

// Options are the Server's collaborators.
type Options struct {
	Admin *store.Admin // owner role: operators' actions and token look-ups; required
	Store *store.Store // app role: tenant administrators' actions, usage, the request log; required
	// JWT verifies tenant administrators' tokens; nil: operators only.
	JWT *auth.JWTVerifier
	// Notify tells running gateways of key changes; nil tells none (a
	// single instance then sees them within BULKHEAD_AUTH_CACHE_TTL).
	Notify Notifier
	// Upstreams are the configured upstreams' names, which a catalog model
	// may name (config.Config.UpstreamNames); nil: none, and adding a
	// model is refused.
	Upstreams []string
	// Failures holds the failure budgets of refused credentials
	// (throttle.go), shared by the replicas through its Redis; nil: no
	// throttling. FailuresPerMinutePerAddress and
	// FailuresPerMinutePerPrefix are the budgets (0: that one is not
	// kept).
	Failures                                                auth.FailureLimiter
	FailuresPerMinutePerAddress, FailuresPerMinutePerPrefix int
	// Sessions holds the console's sessions, shared by every replica and
	// kept across restarts (session_redis.go); nil: in this process's
	// memory.
	Sessions redis.UniversalClient
	// SessionTTL is a console session's lifetime; 0: 30 minutes.
	SessionTTL time.Duration
	Log        *zap.Logger // nil: none
}

// Server is the control listener's server. It is safe for concurrent use.
type Server struct {
	opts     Options
	log      *zap.Logger
	srv      *fasthttp.Server
	reqs     gateway.RequestIDs
	routes   []route
	openapi  []byte
	sessions sessionStore
	throttle throttle
	assets   assets

	base   context.Context // parent of every request's context (not the RequestCtx)
	cancel context.CancelFunc
}

// New builds a Server.
func New(opts Options) (*Server, error) {
	if opts.Admin == nil || opts.Store == nil {
		return nil, errors.New("control: Options.Admin and Options.Store are required")
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = 30 * time.Minute
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.Notify == nil {
		opts.Notify = nopNotifier{}
	}
	s := &Server{opts: opts, log: opts.Log, reqs: gateway.NewRequestIDs(), sessions: newSessions(opts.SessionTTL, time.Now)}
	if opts.Sessions != nil {
		s.sessions = &redisSessions{rdb: opts.Sessions, ttl: opts.SessionTTL}
	}
	s.throttle = newThrottle(opts)
	s.routes = s.routeTable()
	var err error
	if s.openapi, err = openAPIDocument(s.routes); err != nil {
		return nil, err
	}
	if s.assets, err = loadAssets(); err != nil {
		return nil, err
	}
	s.base, s.cancel = context.WithCancel(context.Background())
	s.srv = &fasthttp.Server{
		Handler:                      s.handle,
		NoDefaultServerHeader:        true,
		ReadTimeout:                  readTimeout,
		IdleTimeout:                  idleTimeout,
		MaxRequestBodySize:           maxBodyBytes,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
		SecureErrorLogMessage:        true,
		Logger:                       gateway.NewLibraryLogger(opts.Log.Named("fasthttp")),
		ErrorHandler:                 s.handleParseError,
	}
	return s, nil
}

// Serve accepts connections on ln until Shutdown; nil after a clean one.
func (s *Server) Serve(ln net.Listener) error { return s.srv.Serve(linger.Listener(ln)) }

// Shutdown stops accepting, lets requests finish until ctx ends, then
// cancels their database work.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.ShutdownWithContext(ctx)
	s.cancel()
	if errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
}

// securityHeaders go on every answer of the listener. The console's
// scripts and styles come from its own origin only, and nothing inline
// runs: text from the request log can never become markup that executes.
var securityHeaders = [][2]string{
	{"Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"},
	{"X-Content-Type-Options", "nosniff"},
	{"X-Frame-Options", "DENY"},
	{"Referrer-Policy", "no-referrer"},
	{"Cross-Origin-Opener-Policy", "same-origin"},
	{"Cross-Origin-Resource-Policy", "same-origin"},
	{"Cache-Control", "no-store"},
}

// handle is the one entry point: request id, security headers, dispatch,
// and one error mapping.
func (s *Server) handle(rc *fasthttp.RequestCtx) {
	reqID := s.reqs.From(rc.Request.Header.Peek("X-Request-Id"))
	rc.Response.Header.Set("X-Request-Id", reqID)
	for _, h := range securityHeaders {
		rc.Response.Header.Set(h[0], h[1])
	}
	if err := s.route(rc, reqID); err != nil {
		s.writeError(rc, reqID, err)
	}
}

func (s *Server) writeError(rc *fasthttp.RequestCtx, reqID string, err error) {
	he := gateway.ToHTTPError(err)
	if he.Code >= 500 && he.Code != 499 {
		s.log.Error("control request failed", zap.String("request_id", reqID), zap.Int("status", he.Code), zap.Error(he.Err))
	}
	rc.Response.Header.SetContentType("application/json")
	rc.SetStatusCode(he.Code)
	rc.SetBody(gateway.MarshalError(he, reqID))
}

// handleParseError answers what fasthttp could not read (an oversized
// body above all) in the same error shape.
func (s *Server) handleParseError(rc *fasthttp.RequestCtx, err error) {
	reqID := s.reqs.Next()
	rc.Response.Header.Set("X-Request-Id", reqID)
	rc.SetConnectionClose()
	linger.Mark(rc.Conn()) // the rest of the request may still be arriving
	var he *gateway.HTTPError
	var ne net.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		he = errBodyTooLarge
	case errors.As(err, &ne) && ne.Timeout():
		he = &gateway.HTTPError{Code: fasthttp.StatusRequestTimeout, Type: "invalid_request_error", ErrCode: "request_timeout", Msg: "The request was not received in time."}
	default:
		he = &gateway.HTTPError{Code: fasthttp.StatusBadRequest, Type: "invalid_request_error", ErrCode: "bad_request", Msg: "The request is not valid HTTP."}
	}
	s.writeError(rc, reqID, he)
}

func (s *Server) route(rc *fasthttp.RequestCtx, reqID string) error {
	path := string(rc.Path())
	switch {
	case path == "/openapi.json":
		if !rc.IsGet() && !rc.IsHead() {
			return errMethodNotAllowed
		}
		rc.SetContentType("application/json")
		rc.SetBody(s.openapi)
		return nil
	case len(path) >= len(apiPrefix) && path[:len(apiPrefix)] == apiPrefix:
		return s.api(rc, reqID, path)
	}
	return s.serveAsset(rc, path)
}
