package gateway_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/bulkheadhq/bulkhead/gateway"
)

// events is the order in which the parts of a process saw the shutdown.
type events struct {
	mu   sync.Mutex
	list []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	e.list = append(e.list, s)
	e.mu.Unlock()
}

func (e *events) all() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.list)
}

// fakeAPI stands for the API listener's *Server: Serve blocks until
// Shutdown, or fails at once with serveErr; Shutdown runs onShutdown, as
// if requests were draining, and returns shutdownErr.
type fakeAPI struct {
	ev          *events
	serveErr    error
	onShutdown  func(ctx context.Context)
	shutdownErr error
	closed      chan struct{}
	once        sync.Once
}

func (f *fakeAPI) Serve(ln net.Listener) error {
	if f.serveErr != nil {
		f.ev.add("api failed")
		return f.serveErr
	}
	<-f.closed
	return nil
}

func (f *fakeAPI) Shutdown(ctx context.Context) error {
	f.ev.add("api shutdown")
	if f.onShutdown != nil {
		f.onShutdown(ctx)
	}
	f.once.Do(func() { close(f.closed) })
	f.ev.add("api drained")
	return f.shutdownErr
}

// drainer is the real Health, noting when it was told to drain.
type drainer struct {
	*gateway.Health
	ev *events
	at chan time.Time
}

func (d drainer) SetDraining() {
	d.ev.add("draining")
	d.at <- time.Now()
	d.Health.SetDraining()
}

// loop is a background loop that notes when its ctx ends and when it
// returns, running flush in between (the request log's final flush). It
// sends its ctx on started, if not nil.
func loop(ev *events, name string, started chan<- context.Context, flush func() error) func(context.Context) error {
	return func(ctx context.Context) error {
		if started != nil {
			started <- ctx
		}
		<-ctx.Done()
		ev.add(name + " stopping")
		var err error
		if flush != nil {
			err = flush()
		}
		ev.add(name + " returned")
		return err
	}
}

// recordingListener notes when it is closed (the admin server's Shutdown).
type recordingListener struct {
	net.Listener
	ev   *events
	once sync.Once
}

func (l *recordingListener) Close() error {
	l.once.Do(func() { l.ev.add("admin closed") })
	return l.Listener.Close()
}

func loopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// harness is a Process of fakes around a real Health and admin handler.
type harness struct {
	ev     *events
	api    *fakeAPI
	health drainer
	admin  string // the admin listener's base URL
	logs   *observer.ObservedLogs
	p      gateway.Process
}

func newHarness(t *testing.T) *harness {
	ev := &events{}
	health := drainer{gateway.NewHealth(prometheus.NewRegistry(), func(map[string]bool) bool { return true }), ev, make(chan time.Time, 1)}
	core, logs := observer.New(zapcore.InfoLevel)
	adminLn := &recordingListener{Listener: loopback(t), ev: ev}
	api := &fakeAPI{ev: ev, closed: make(chan struct{})}
	return &harness{ev: ev, api: api, health: health, admin: "http://" + adminLn.Addr().String(), logs: logs,
		p: gateway.Process{
			API: api, Listener: loopback(t),
			Admin: gateway.AdminHandler(health.Health, prometheus.NewRegistry()), AdminListener: adminLn,
			Health:     health,
			RequestLog: loop(ev, "request log", nil, nil),
			Loops:      []gateway.Loop{{Name: "auth", Run: loop(ev, "auth", nil, nil)}, {Name: "health", Run: health.Health.Run}},
			Grace:      100 * time.Millisecond, Drain: 5 * time.Second,
			Log: zap.New(core),
		}}
}

// run runs the process until cancel is called, and returns Run's result.
func (h *harness) run(t *testing.T) (cancel func(), result <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gateway.Run(ctx, h.p) }()
	// Serving: the admin listener answers.
	deadline := time.Now().Add(5 * time.Second)
	for h.get("/healthz") != 200 {
		if time.Now().After(deadline) {
			t.Fatal("the admin listener does not answer")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cancel, done
}

func (h *harness) get(path string) int {
	resp, err := (&http.Client{Timeout: time.Second}).Get(h.admin + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func wait(t *testing.T, result <-chan error) error {
	t.Helper()
	select {
	case err := <-result:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

// before fails the test unless every event of first is in list, ahead of
// every event of then.
func before(t *testing.T, list []string, first, then []string) {
	t.Helper()
	last := -1
	for _, e := range first {
		i := slices.Index(list, e)
		if i < 0 {
			t.Errorf("no %q in %q", e, list)
		}
		last = max(last, i)
	}
	for _, e := range then {
		if i := slices.Index(list, e); i < 0 || i < last {
			t.Errorf("%q not after %q in %q", e, first, list)
		}
	}
}

// The order THREATS 54 relies on: not ready at once; the API accepts for
// the grace period, then drains with the drain deadline; only then do the
// loops stop, so the request log flushes what the cut streams recorded;
// the admin listener answers until every loop has returned.
func TestRunShutdownOrder(t *testing.T) {
	h := newHarness(t)
	h.p.Grace = 500 * time.Millisecond
	var cancelled time.Time
	loopCtx := make(chan context.Context, 1)
	h.p.Loops[0].Run = loop(h.ev, "auth", loopCtx, nil)
	h.api.onShutdown = func(ctx context.Context) {
		if since := time.Since(cancelled); since < h.p.Grace {
			t.Errorf("API shutdown %s after the signal, within the grace period (%s)", since, h.p.Grace)
		}
		if ready, _ := h.health.Ready(); ready {
			t.Error("still ready when the API is shut down")
		}
		if (<-loopCtx).Err() != nil {
			t.Error("the loops were stopped before the API drained")
		}
		deadline, ok := ctx.Deadline()
		if left := time.Until(deadline); !ok || left <= 0 || left > h.p.Drain {
			t.Errorf("API shutdown with %s left (deadline set: %t), want at most the drain deadline %s", left, ok, h.p.Drain)
		}
		if ctx.Err() != nil {
			t.Error("the drain ctx is already done: the signal's ctx reached it")
		}
	}
	h.p.RequestLog = loop(h.ev, "request log", nil, func() error {
		// The final flush: /metrics and /readyz still answer.
		time.Sleep(50 * time.Millisecond)
		if code := h.get("/readyz"); code != 503 {
			h.ev.add("admin gone during the flush")
			t.Errorf("/readyz answered %d during the request log's flush, want 503 (draining)", code)
		}
		return nil
	})
	cancel, result := h.run(t)
	if code := h.get("/readyz"); code != 200 {
		t.Fatalf("/readyz = %d while serving", code)
	}
	cancelled = time.Now()
	cancel()
	// Not ready at once: long before the grace period is over (a margin
	// for a loaded machine).
	if at := <-h.health.at; at.Sub(cancelled) > h.p.Grace/2 {
		t.Errorf("told to drain %s after the signal, want at once (grace %s)", at.Sub(cancelled), h.p.Grace)
	}
	if err := wait(t, result); err != nil {
		t.Fatalf("Run = %v after a signal, want nil", err)
	}
	got := h.ev.all()
	before(t, got, []string{"draining"}, []string{"api shutdown"})
	before(t, got, []string{"api shutdown"}, []string{"api drained"})
	before(t, got, []string{"api drained"}, []string{"request log stopping", "auth stopping"})
	before(t, got, []string{"request log returned", "auth returned"}, []string{"admin closed"})
	if h.get("/healthz") != 0 {
		t.Error("the admin listener still answers after Run returned")
	}
	msgs := []string{}
	for _, e := range h.logs.All() {
		msgs = append(msgs, e.Message)
	}
	if !slices.Equal(msgs, []string{"shutting down", "stopped"}) {
		t.Errorf("logged %q, want shutting down, stopped", msgs)
	}
}

// A listener that fails stops the whole process in the same order, and
// its error is Run's.
func TestRunListenerFailure(t *testing.T) {
	h := newHarness(t)
	h.p.Grace = 0
	listenErr := errors.New("accept: too many open files")
	h.api.serveErr = listenErr
	ctx := t.Context()
	if err := gateway.Run(ctx, h.p); !errors.Is(err, listenErr) {
		t.Fatalf("Run = %v, want the listener's error", err)
	}
	got := h.ev.all()
	before(t, got, []string{"api failed"}, []string{"api shutdown"})
	before(t, got, []string{"api drained"}, []string{"request log stopping", "auth stopping"})
	before(t, got, []string{"request log returned", "auth returned"}, []string{"admin closed"})
	if ready, _ := h.health.Ready(); ready {
		t.Error("still ready after the API failed")
	}
}

// Records lost by the request log's final flush are logged as before, and
// the process still exits cleanly; an error of API.Shutdown is Run's.
func TestRunLoopAndShutdownErrors(t *testing.T) {
	t.Run("request log", func(t *testing.T) {
		h := newHarness(t)
		h.p.Grace = 0
		lost := errors.New("store: request log records lost at shutdown")
		h.p.RequestLog = loop(h.ev, "request log", nil, func() error { return lost })
		h.p.Loops = append(h.p.Loops, gateway.Loop{Name: "limiter", Run: loop(h.ev, "limiter", nil, func() error { return errors.New("heartbeat") })})
		cancel, result := h.run(t)
		cancel()
		if err := wait(t, result); err != nil {
			t.Fatalf("Run = %v, want nil: a loop's error is logged, not returned", err)
		}
		errs := h.logs.FilterLevelExact(zapcore.ErrorLevel).All()
		var msgs []string
		for _, e := range errs {
			msgs = append(msgs, e.Message+" "+e.ContextMap()["error"].(string))
		}
		slices.Sort(msgs)
		want := []string{"background loop failed heartbeat", "request log stopped with records lost " + lost.Error()}
		if !slices.Equal(msgs, want) {
			t.Errorf("error lines %q, want %q", msgs, want)
		}
	})
	t.Run("API shutdown", func(t *testing.T) {
		h := newHarness(t)
		h.p.Grace = 0
		h.api.shutdownErr = errors.New("fasthttp: shutdown failed")
		cancel, result := h.run(t)
		cancel()
		if err := wait(t, result); !errors.Is(err, h.api.shutdownErr) {
			t.Fatalf("Run = %v, want the shutdown's error", err)
		}
		before(t, h.ev.all(), []string{"request log returned"}, []string{"admin closed"})
	})
}
