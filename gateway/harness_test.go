package gateway

import (
	"bytes"
	"context"
	"net"
	"net/http"
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

// network is where a harness's servers listen and how its clients reach
// them: loopback TCP beside the real services, memory without them
// (memNet).
type network interface {
	// listener returns a listener, closed when the test ends, and the
	// host:port that reaches it.
	listener() (net.Listener, string)
	// listen serves handler until the test ends and returns its host:port.
	listen(handler fasthttp.RequestHandler) string
	// dial connects to a host:port of the network.
	dial(addr string) (net.Conn, error)
}

// loopback is the machine's own network, on 127.0.0.1.
type loopback struct{ t testing.TB }

func (l loopback) listener() (net.Listener, string) {
	l.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { ln.Close() })
	return ln, ln.Addr().String()
}

func (l loopback) listen(handler fasthttp.RequestHandler) string {
	l.t.Helper()
	ln, addr := l.listener()
	serveHandler(l.t, ln, handler)
	return addr
}

func (loopback) dial(addr string) (net.Conn, error) { return net.Dial("tcp", addr) }

// listen starts a fasthttp server with handler on a loopback port.
func listen(t testing.TB, handler fasthttp.RequestHandler) string {
	t.Helper()
	return loopback{t}.listen(handler)
}

// serveHandler serves handler on ln until the test ends.
func serveHandler(t testing.TB, ln net.Listener, handler fasthttp.RequestHandler) {
	// What fasthttp would print (on memory, every connection the client
	// closes is an error) goes to the test's log.
	srv := &fasthttp.Server{Handler: handler, CloseOnShutdown: true, Logger: testLogger{t}}
	sl := &stopListener{Listener: ln}
	done := make(chan struct{})
	go func() { srv.Serve(sl); close(done) }() //nolint:errcheck // ends with the test
	t.Cleanup(func() {
		sl.Close()
		<-done
		settle(srv)
		srv.ShutdownWithContext(context.Background()) //nolint:errcheck // test teardown
	})
}

// stopListener and settle make a server's shutdown at the end of a test
// take microseconds rather than 100ms. fasthttp's Shutdown counts Serve's
// accept loop, and any connection its client has just closed, as open,
// and finding one open looks again only 100ms later. So a harness closes
// the listener (stopListener: then Shutdown's own Close is a no-op) and
// waits for Serve to return, then settles, then shuts the server down.
type stopListener struct {
	net.Listener
	once sync.Once
	err  error
}

func (l *stopListener) Close() error {
	l.once.Do(func() { l.err = l.Listener.Close() })
	return l.err
}

// settle gives srv up to 100ms to see the connections its clients have
// closed end.
func settle(srv *fasthttp.Server) {
	for i := 0; i < 100 && srv.GetOpenConnectionsCount() > 0; i++ {
		time.Sleep(time.Millisecond)
	}
}

// testLogger is a fasthttp.Logger writing to the test's log.
type testLogger struct{ t testing.TB }

func (l testLogger) Printf(format string, args ...any) { l.t.Logf(format, args...) }

// harness is one gateway in front of a mock upstream. newHarness's runs
// on loopback with real PostgreSQL and Redis behind its authenticator and
// limiter; newFakeHarness's runs in memory with no service at all.
type harness struct {
	t       testing.TB
	net     network
	admin   *store.Admin        // nil in a service-free harness
	st      *store.Store        // nil in a service-free harness
	auth    *auth.Authenticator // nil in a service-free harness
	fake    *fakeAuth           // nil in a harness with services
	srv     *Server
	rec     *memRecorder
	url     string               // the gateway's base URL, e.g. http://127.0.0.1:1234
	client  *fasthttp.HostClient // do's client; nil: fasthttp's default
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
	h := &harness{t: t, net: loopback{t}, admin: storetest.Admin(t), rec: newMemRecorder()}
	cfg := h.configure(mo, mod)
	kek, err := cfg.SealKEK() // a test's own, through BULKHEAD_SEAL_KEYSET (sealing_test.go)
	if err != nil {
		t.Fatal(err)
	}
	h.st = storetest.Open(t, store.Options{Seal: store.SealOptions{KEK: kek}})
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
	// Registered before start's: runs after the gateway's shutdown.
	t.Cleanup(func() {
		cancel()
		<-authDone
	})
	h.limiter = ratelimit.New(rdb, ratelimit.Options{Prefix: "bulkhead:rl:test:" + t.Name(), Timeout: limitTimeout, Lease: true})
	h.start(Deps{Auth: h.auth, Recorder: h.rec, Prompts: h.st, Limiter: h.limiter})
	return h
}

// configure starts the mock upstream on h's network and sets h.cfg: the
// defaults with the mock as the default upstream, then mod.
func (h *harness) configure(mo mock.Options, mod func(*config.Config)) config.Config {
	h.t.Helper()
	h.mock = mock.NewServer(mo)
	h.t.Cleanup(h.mock.Close)
	mockAddr := h.net.listen(func(rc *fasthttp.RequestCtx) {
		// The gateway forwards only allowlisted headers; the SDK telemetry
		// prefix is one, so tests steer the mock through it.
		for _, knob := range []string{"Status", "Latency", "Chunks", "Cached-Tokens"} {
			if v := rc.Request.Header.Peek("X-Stainless-Mock-" + knob); len(v) > 0 {
				rc.Request.Header.SetBytesV("X-Mock-"+knob, v)
			}
		}
		h.mock.Handler(rc)
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
	return cfg
}

// start serves a gateway with deps (see deps) on h's network, logging
// everything at debug level into h.logs for hygiene checks, until the
// test ends.
func (h *harness) start(d Deps) {
	h.t.Helper()
	h.logs = &syncBuffer{}
	logger := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(h.logs), zap.DebugLevel))
	srv, err := New(h.cfg, logger, h.deps(d))
	if err != nil {
		h.t.Fatal(err)
	}
	gw := h.serve(srv)
	h.srv, h.url, h.client = srv, gw.url, gw.client
}

// deps completes d for a gateway of h: h's authenticator unless d names
// one, and upstreams dialled on h's network.
func (h *harness) deps(d Deps) Deps {
	if d.Auth == nil {
		if h.fake != nil {
			d.Auth = h.fake
		} else {
			d.Auth = h.auth
		}
	}
	if n, ok := h.net.(*memNet); ok && d.UpstreamDial == nil {
		d.UpstreamDial = n.dial
	}
	return d
}

// serve serves srv on h's network until the test ends, and returns a
// harness that talks to it (only do, dial and httpClient are usable). The
// test's end shuts srv down, which must then return no error.
func (h *harness) serve(srv *Server) *harness {
	h.t.Helper()
	ln, addr := h.net.listener()
	sl := &stopListener{Listener: ln}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sl) }()
	// WriteBufferSize: a request of up to 64 KiB leaves in one write. On
	// memory, a server that answers and closes before it has read the
	// whole request (a 413) fails the client's next write at once, where
	// TCP's send buffer would have taken it and the client read the answer.
	client := &fasthttp.HostClient{Addr: addr, Dial: h.net.dial, WriteBufferSize: 64 << 10}
	gw := &harness{t: h.t, net: h.net, url: "http://" + addr, client: client}
	h.t.Cleanup(func() {
		gw.client.CloseIdleConnections()
		sl.Close()
		if err := <-done; err != nil {
			h.t.Errorf("Serve: %v", err)
		}
		settle(srv.srv)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			h.t.Errorf("Shutdown: %v", err)
		}
	})
	return gw
}

// dial opens a connection to the gateway, for raw HTTP.
func (h *harness) dial() (net.Conn, error) {
	return h.net.dial(strings.TrimPrefix(h.url, "http://"))
}

// httpClient is a net/http client whose connections reach the gateway
// (h.url) over h's network; they are closed when the test ends.
func (h *harness) httpClient() *http.Client {
	tr := &http.Transport{DialContext: func(_ context.Context, _, addr string) (net.Conn, error) { return h.net.dial(addr) }}
	h.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// tenant creates an organization with one key and returns both.
func (h *harness) tenant(rpm int) (uuid.UUID, string, store.Key) {
	h.t.Helper()
	var org uuid.UUID
	if h.fake != nil {
		org = uuid.New()
	} else {
		o, err := h.admin.CreateOrg(context.Background(), "gw "+strings.ReplaceAll(h.t.Name(), "/", " "))
		if err != nil {
			h.t.Fatal(err)
		}
		org = o.ID
	}
	key, k := h.key(org, rpm)
	return org, key, k
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
	nk := store.NewKey{
		OrgID: org, Hash: apikey.Hash([]byte(key)), DisplayPrefix: apikey.Display(key), Name: "gw", RateLimitPerMinute: rpm, TokensPerMinute: tpm,
	}
	if h.fake != nil {
		return key, h.fake.add(key, nk)
	}
	k, err := h.admin.CreateKey(context.Background(), nk)
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
	return h.doVia(h.client, method, path, body, headers...)
}

// from is a client whose connections to the gateway come from the loopback
// address ip (any of 127.0.0.0/8), as a distinct client address.
func (h *harness) from(ip string) *fasthttp.HostClient {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c := &fasthttp.HostClient{Addr: strings.TrimPrefix(h.url, "http://"), Dial: func(a string) (net.Conn, error) { return d.Dial("tcp", a) }}
	h.t.Cleanup(c.CloseIdleConnections)
	return c
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
