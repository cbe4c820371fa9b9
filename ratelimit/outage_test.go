package ratelimit

import (
	"context"
	"testing"
	"time"

	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// running starts lim.Run until the test ends (or stop is called) and
// returns stop, which waits for Run to return.
func running(t *testing.T, lim *Limiter) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- lim.Run(ctx) }()
	var stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// waitReplicas polls until every limiter counts n replicas.
func waitReplicas(t *testing.T, n int, lims ...*Limiter) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, l := range lims {
		for l.Stats().Replicas != n {
			if time.Now().After(deadline) {
				t.Fatalf("Replicas = %d, want %d", l.Stats().Replicas, n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// Each running Limiter is counted by the others through Redis; one that
// stops leaves the count at once, one that stops heartbeating leaves it
// after three heartbeats.
func TestHeartbeatCountsReplicas(t *testing.T) {
	lims := replicas(t, 3, Options{Heartbeat: 20 * time.Millisecond})
	if s := lims[0].Stats(); s.Replicas != 1 {
		t.Fatalf("before Run: Replicas = %d, want 1", s.Replicas)
	}
	stops := []func(){running(t, lims[0]), running(t, lims[1]), running(t, lims[2])}
	waitReplicas(t, 3, lims...)
	stops[2]() // Run returns, and the replica leaves the set
	waitReplicas(t, 2, lims[0], lims[1])

	// A replica that dies without leaving is dropped once its heartbeat is
	// three heartbeats old.
	ghost := New(storetest.Redis(t), Options{Prefix: lims[0].prefix, Heartbeat: 20 * time.Millisecond})
	ghost.beat(context.Background())
	if got := ghost.Stats().Replicas; got != 3 {
		t.Fatalf("ghost counts %d replicas, want 3", got)
	}
	waitReplicas(t, 3, lims[0])
	waitReplicas(t, 2, lims[0], lims[1])

	// Without Redis there is nothing to count and nothing to run.
	if err := New(nil, Options{}).Run(context.Background()); err != nil {
		t.Errorf("Run without Redis: %v", err)
	}
}

// THREATS 47 and 60: while Redis is down the replicas share each budget
// instead of each admitting a whole one, and they start from what Redis
// last showed them, not from a full budget.
func TestOutageSharesTheBudget(t *testing.T) {
	srv := startRedisServer(t)
	clk := newFakeClock() // the local budgets do not refill during the test
	opts := Options{
		Prefix:    "bulkhead-test:rl:outage",
		Timeout:   100 * time.Millisecond,
		Cooldown:  time.Hour, // no probe during the outage
		Heartbeat: 20 * time.Millisecond,
		Now:       clk.Now,
	}
	var lims [2]*Limiter
	for i := range lims {
		rdb, _ := faultClient(t, srv.addr())
		lims[i] = New(rdb, opts)
		running(t, lims[i])
	}
	waitReplicas(t, 2, lims[:]...)

	req := PerMinute(30)
	tok := PerMinute(300)
	spend := func(key string, n int) {
		for i := range n {
			if d := allow(t, lims[i%2], key, req, Limit{}); !d.Allowed || d.Source != SourceRedis {
				t.Fatalf("%s before the outage: %+v", key, d)
			}
		}
	}
	spend("spent", 30)
	spend("two-thirds", 20)
	allow(t, lims[0], "tokens", req, tok)
	if d := reserve(t, lims[0], "tokens", req, tok, 200); !d.Allowed {
		t.Fatalf("Reserve before the outage: %+v", d)
	}
	allow(t, lims[1], "tokens", req, tok) // replica 1 sees the 200 set aside

	srv.kill()
	admitted := func(key string) (n int) {
		for i := range 100 {
			d := allow(t, lims[i%2], key, req, Limit{})
			if d.Source != SourceLocal {
				t.Fatalf("%s during the outage: %+v, want a local decision", key, d)
			}
			if d.Allowed {
				n++
			}
		}
		return n
	}
	// A fresh key: 15 per replica, 30 in all (each replica alone admitted
	// 30, so two admitted 60).
	if n := admitted("fresh"); n != 30 {
		t.Errorf("fresh key: the two replicas admitted %d during the outage, want 30 (the limit)", n)
	}
	// A key whose budget was spent just before: nothing (not a fresh
	// budget on each replica).
	if n := admitted("spent"); n != 0 {
		t.Errorf("spent key: admitted %d during the outage, want 0", n)
	}
	// 20 of 30 spent: the two replicas share the 10 left. One saw 19
	// spent, the other 20: 5 each.
	if n := admitted("two-thirds"); n != 10 {
		t.Errorf("key with 10 left: admitted %d during the outage, want 10", n)
	}
	// Tokens alike: 100 of 300 left, 50 a replica; the reservation made in
	// Redis is settled here, its refund counted once.
	allow(t, lims[1], "tokens", req, tok)
	if d := reserve(t, lims[1], "tokens", req, tok, 51); d.Allowed {
		t.Errorf("Reserve(51) with 100 tokens left for two replicas: %+v", d)
	}
	allow(t, lims[1], "tokens", req, tok)
	d := reserve(t, lims[1], "tokens", req, tok, 50)
	if !d.Allowed || d.Reservation.Source != SourceLocal {
		t.Fatalf("Reserve(50) with 100 tokens left for two replicas: %+v", d)
	}
	settle(t, lims[0], "tokens", tok, Reservation{Tokens: 200, Source: SourceRedis}, 100)
	if d := allow(t, lims[0], "tokens", Limit{}, tok); d.Tokens.Remaining != 100 {
		t.Errorf("after a refund of 100: %+v, want 100 tokens left for replica 0 (200 of the budget, halved)", d)
	}
	for _, l := range lims {
		if s := l.Stats(); s.Replicas != 2 || s.Fallbacks != 1 {
			t.Errorf("Stats = %+v, want 2 replicas remembered through the outage and one fallback", s)
		}
	}
}
