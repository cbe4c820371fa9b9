package gateway

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/bulkheadhq/bulkhead/cmd/mockllm/mock"
	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway/apikey"
	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/ratelimit"
	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// providerKey is the upstream credential in tests: it must never reach a
// caller or a log.
const providerKey = "sk-provider-SECRET-0123456789abcdef"

// memRecorder keeps records in memory: the request-log sink of tests.
type memRecorder struct {
	discard bool // benchmarks: keep nothing
	mu      sync.Mutex
	recs    []store.LogRecord
	cond    chan struct{}
}

func newMemRecorder() *memRecorder { return &memRecorder{cond: make(chan struct{}, 1)} }

func (m *memRecorder) Admit() error { return nil }

func (m *memRecorder) Record(r store.LogRecord) {
	if m.discard {
		return
	}
	m.mu.Lock()
	m.recs = append(m.recs, r)
	m.mu.Unlock()
	select {
	case m.cond <- struct{}{}:
	default:
	}
}

// find waits up to 5s for the record of reqID.
func (m *memRecorder) find(t *testing.T, reqID string) store.LogRecord {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		m.mu.Lock()
		for _, r := range m.recs {
			if r.RequestID == reqID {
				m.mu.Unlock()
				return r
			}
		}
		m.mu.Unlock()
		select {
		case <-m.cond:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no record for request %s", reqID)
		}
	}
}

// listen starts a fasthttp server with handler on a loopback port.
func listen(t testing.TB, handler fasthttp.RequestHandler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: handler, CloseOnShutdown: true}
	go srv.Serve(ln)                                                    //nolint:errcheck // ends with the test
	t.Cleanup(func() { srv.ShutdownWithContext(context.Background()) }) //nolint:errcheck // test teardown
	return ln.Addr().String()
}

// harness is one gateway on loopback in front of a mock upstream, with
// real PostgreSQL and Redis behind its authenticator.
type harness struct {
	t       testing.TB
	admin   *store.Admin
	st      *store.Store
	auth    *auth.Authenticator
	srv     *Server
	rec     *memRecorder
	url     string // the gateway's base URL, e.g. http://127.0.0.1:1234
	mock    *mock.Server
	cfg     config.Config
	limiter *ratelimit.Limiter
	rdb     redis.UniversalClient // the Redis behind auth and limiter; nil never
	logs    *syncBuffer
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testRun tells this test process's Redis budgets from those of earlier
// runs, which may not have refilled yet (every test client is 127.0.0.1).
var testRun = uuid.NewString()

// deadRedis as cfg.RedisURL gives the harness a Redis client that cannot
// connect, for fault tests.
const deadRedis = "redis://127.0.0.1:1/0"

// newBenchHarness is a harness whose recorder keeps nothing.
func newBenchHarness(b *testing.B) *harness {
	h := newHarnessWith(b, mock.Options{}, nil)
	h.rec.discard = true
	return h
}

func newHarness(t *testing.T, mod func(*config.Config)) *harness {
	t.Helper()
	return newHarnessWith(t, mock.Options{}, mod)
}

func newHarnessWith(t testing.TB, mo mock.Options, mod func(*config.Config)) *harness {
	t.Helper()
	h := &harness{t: t, admin: storetest.Admin(t), st: storetest.Open(t, store.Options{}), rec: newMemRecorder()}
	h.mock = mock.NewServer(mo)
	t.Cleanup(h.mock.Close)
	mockAddr := listen(t, func(ctx *fasthttp.RequestCtx) {
		// The gateway forwards only allowlisted headers; the SDK telemetry
		// prefix is one, so tests steer the mock through it.
		for _, knob := range []string{"Status", "Latency", "Chunks"} {
			if v := ctx.Request.Header.Peek("X-Stainless-Mock-" + knob); len(v) > 0 {
				ctx.Request.Header.SetBytesV("X-Mock-"+knob, v)
			}
		}
		h.mock.Handler(ctx)
	})

	cfg := config.Default()
	cfg.UpstreamURL = "http://" + mockAddr + "/v1"
	cfg.UpstreamAPIKey = providerKey
	// Generous: the race detector and parallel packages load this machine.
	cfg.UpstreamFirstByteTimeout = 10 * time.Second
	cfg.UpstreamIdleTimeout = 10 * time.Second
	if mod != nil {
		mod(&cfg)
	}
	h.cfg = cfg
	var rdb redis.UniversalClient
	switch {
	case cfg.RedisURL == deadRedis:
		rdb = redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 50 * time.Millisecond, ContextTimeoutEnabled: true})
		t.Cleanup(func() { rdb.Close() })
	case cfg.RedisMode != config.RedisSingle:
		// A cluster or Sentinel deployment of the test's own, through
		// the client the gateway builds.
		ro, err := cfg.RedisOptions()
		if err != nil {
			t.Fatal(err)
		}
		rdb = ro.NewClient()
		t.Cleanup(func() { rdb.Close() })
	default:
		rdb = storetest.Redis(t)
	}
	h.rdb = rdb
	var err error
	// Instances of one test share their budgets, as replicas do.
	limitTimeout := time.Second
	if cfg.RedisURL == deadRedis {
		limitTimeout = 50 * time.Millisecond
	}
	// Tests assert behaviour, not timing: Redis gets a second unless it is
	// the dead one, which fails at once anyway.
	ao := auth.Options{Store: h.st, Redis: rdb, RedisTimeout: time.Second,
		Failures:                    ratelimit.New(rdb, ratelimit.Options{Prefix: "bulkhead:authfail:test:" + testRun + ":" + t.Name(), Timeout: limitTimeout}),
		FailuresPerMinutePerAddress: cfg.AuthFailuresPerMinutePerAddress, FailuresPerMinutePerOrg: cfg.AuthFailuresPerMinutePerOrg}
	if cfg.JWTHS256Secret != "" {
		if ao.JWT, err = auth.NewJWTVerifier(auth.JWTConfig{HS256Secret: []byte(cfg.JWTHS256Secret.Reveal())}); err != nil {
			t.Fatal(err)
		}
	}
	h.auth, err = auth.New(ao)
	if err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithCancel(context.Background())
	authDone := make(chan struct{})
	go func() { h.auth.Run(actx); close(authDone) }() //nolint:errcheck // returns nil on cancel
	h.limiter = ratelimit.New(rdb, ratelimit.Options{Prefix: "bulkhead:rl:test:" + t.Name(), Timeout: limitTimeout, Lease: true})
	// Everything the gateway logs, at debug level, for hygiene checks.
	h.logs = &syncBuffer{}
	logger := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(h.logs), zap.DebugLevel))
	h.srv, err = New(cfg, logger, Deps{Auth: h.auth, Recorder: h.rec, Prompts: h.st, Limiter: h.limiter})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.srv.Serve(ln) }()
	h.url = "http://" + ln.Addr().String()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		if err := h.srv.Shutdown(sctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		cancel()
		<-authDone
	})
	return h
}

// tenant creates an organization with one key and returns both.
func (h *harness) tenant(rpm int) (uuid.UUID, string, store.Key) {
	h.t.Helper()
	org, err := h.admin.CreateOrg(context.Background(), "gw "+strings.ReplaceAll(h.t.Name(), "/", " "))
	if err != nil {
		h.t.Fatal(err)
	}
	key, k := h.key(org.ID, rpm)
	return org.ID, key, k
}

func (h *harness) key(org uuid.UUID, rpm int) (string, store.Key) {
	h.t.Helper()
	return h.keyWithTPM(org, rpm, 0)
}

func (h *harness) keyWithTPM(org uuid.UUID, rpm, tpm int) (string, store.Key) {
	h.t.Helper()
	key, err := apikey.Generate(org)
	if err != nil {
		h.t.Fatal(err)
	}
	k, err := h.admin.CreateKey(context.Background(), store.NewKey{
		OrgID: org, Hash: apikey.Hash([]byte(key)), DisplayPrefix: apikey.Display(key), Name: "gw", RateLimitPerMinute: rpm, TokensPerMinute: tpm,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return key, k
}

// reply is a finished HTTP exchange with the gateway.
type reply struct {
	status  int
	headers map[string]string
	body    []byte
}

// do sends a request to the gateway. headers alternate name and value.
// It may be called from any goroutine: a failed exchange is reported with
// Errorf (not Fatalf, which only the test's goroutine may call) and
// answers a reply with status 0.
func (h *harness) do(method, path, body string, headers ...string) reply {
	h.t.Helper()
	return h.doVia(nil, method, path, body, headers...)
}

// from is a client whose connections to the gateway come from the loopback
// address ip (any of 127.0.0.0/8), as a distinct client address.
func (h *harness) from(ip string) *fasthttp.HostClient {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &fasthttp.HostClient{Addr: strings.TrimPrefix(h.url, "http://"), Dial: func(a string) (net.Conn, error) { return d.Dial("tcp", a) }}
}

// doVia is do through client c (nil: fasthttp's default client).
func (h *harness) doVia(c *fasthttp.HostClient, method, path, body string, headers ...string) reply {
	h.t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(h.url + path)
	req.Header.SetMethod(method)
	if body != "" {
		req.Header.SetContentType("application/json")
		req.SetBodyString(body)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	do := fasthttp.DoTimeout
	if c != nil {
		do = c.DoTimeout
	}
	if err := do(req, resp, 10*time.Second); err != nil {
		h.t.Errorf("%s %s: %v", method, path, err)
		return reply{headers: map[string]string{}}
	}
	r := reply{status: resp.StatusCode(), headers: map[string]string{}, body: append([]byte(nil), resp.Body()...)}
	for k, v := range resp.Header.All() {
		r.headers[strings.ToLower(string(k))] = string(v)
	}
	return r
}

// listenServer serves srv on a loopback port and returns a harness that
// talks to it (only do is usable).
func listenServer(t *testing.T, srv *Server) *harness {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx) //nolint:errcheck // test teardown
		<-done
	})
	return &harness{t: t, url: "http://" + ln.Addr().String()}
}
