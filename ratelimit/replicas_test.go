package ratelimit

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// replicas returns n Limiters sharing one Redis through a client each, as
// gateway replicas do, with the given clocks for their local limiters.
func replicas(t *testing.T, n int, opts Options, clocks ...func() time.Time) []*Limiter {
	t.Helper()
	first := storetest.Redis(t)
	opts.Prefix = testPrefix(t, first)
	lims := make([]*Limiter, n)
	for i := range lims {
		rdb := first
		if i > 0 {
			rdb = storetest.Redis(t)
		}
		o := opts
		if i < len(clocks) {
			o.Now = clocks[i]
		}
		lims[i] = New(rdb, o)
	}
	return lims
}

// burst makes calls concurrent Allow calls for one key at limit, released
// at once and spread round-robin over lims, and counts the decisions. Each
// must come from Redis, without error.
func burst(t *testing.T, lims []*Limiter, calls int, limit Limit) (allowed, rejected int64, took time.Duration) {
	t.Helper()
	var a, r atomic.Int64
	start := make(chan struct{})
	began := time.Now()
	var wg sync.WaitGroup
	for i := range calls {
		wg.Go(func() {
			<-start
			d, err := lims[i%len(lims)].Allow(context.Background(), "key-1", limit, Limit{})
			if err != nil {
				t.Errorf("Allow: %v", err)
				return
			}
			if d.Source != SourceRedis {
				t.Errorf("Source = %q, want %q", d.Source, SourceRedis)
			}
			if d.Allowed {
				a.Add(1)
			} else {
				r.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	return a.Load(), r.Load(), time.Since(began)
}

// THREATS 45: three replicas, a burst well past the limit: exactly the
// limit is admitted, atomically.
func TestReplicasShareOneRequestBudget(t *testing.T) {
	lims := replicas(t, 3, Options{Timeout: 5 * time.Second})
	const calls = 200
	allowed, rejected, took := burst(t, lims, calls, PerMinute(60))
	// The budget refills one request a second: a burst that lasted longer
	// (a loaded machine) may rightly admit one more per second.
	extra := int64(took / time.Second)
	if allowed < 60 || allowed > 60+extra || allowed+rejected != calls {
		t.Errorf("allowed %d, rejected %d in %v; want exactly 60 and 140", allowed, rejected, took)
	}
	t.Logf("200 calls through 3 replicas in %v: %d allowed, %d rejected", took.Round(time.Millisecond), allowed, rejected)
	var redisDecisions uint64
	for _, l := range lims {
		s := l.Stats()
		redisDecisions += s.RedisDecisions
		if s.LocalDecisions != 0 || s.RedisErrors != 0 {
			t.Errorf("Stats = %+v, want only Redis decisions", s)
		}
	}
	if redisDecisions != calls {
		t.Errorf("RedisDecisions sum to %d, want %d", redisDecisions, calls)
	}
}

// Tokens are checked at admission and charged after the response, so
// concurrent requests may overspend by what is in flight, never more, and
// every charge from every replica is counted.
func TestReplicasShareOneTokenBudget(t *testing.T) {
	lims := replicas(t, 3, Options{Timeout: 5 * time.Second})
	tok := Limit{Rate: 1000, Period: time.Hour, Burst: 1000} // a token every 3.6s
	const (
		workers = 30
		usage   = 100
	)
	var admitted atomic.Int64
	start := make(chan struct{})
	began := time.Now()
	var wg sync.WaitGroup
	for i := range workers {
		lim := lims[i%len(lims)]
		wg.Go(func() {
			<-start
			ctx := context.Background()
			for {
				d, err := lim.Allow(ctx, "key-1", Limit{}, tok)
				if err != nil {
					t.Errorf("Allow: %v", err)
					return
				}
				if !d.Allowed {
					return
				}
				admitted.Add(1)
				if err := lim.Charge(ctx, "key-1", tok, usage); err != nil {
					t.Errorf("Charge: %v", err)
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()

	n := int(admitted.Load())
	// At least the budget is spent; at most one request per worker is
	// admitted past it (each passed the check before the others' charges).
	if n < 1000/usage || n > 1000/usage+workers-1 {
		t.Errorf("admitted %d requests of %d tokens, want %d..%d", n, usage, 1000/usage, 1000/usage+workers-1)
	}
	// No charge was lost: the debt is exactly what was charged.
	d := allow(t, lims[0], "key-1", Limit{}, tok)
	if d.Allowed {
		t.Fatal("admitted after the budget was spent")
	}
	charged := time.Duration(n*usage) * 3600 * time.Millisecond
	within(t, "Tokens.Reset", d.Tokens.Reset, charged-time.Since(began)-time.Millisecond, charged)
	t.Logf("%d workers admitted %d requests (%d tokens) on a budget of 1000", workers, n, n*usage)
}

// THREATS 46: the replicas' clocks do not matter; Redis TIME does.
func TestClockSkewDoesNotChangeRedisDecisions(t *testing.T) {
	skewed := func(d time.Duration) func() time.Time {
		return func() time.Time { return time.Now().Add(d) }
	}
	lims := replicas(t, 3, Options{}, skewed(5*time.Minute), skewed(-5*time.Minute), time.Now)
	tok := PerMinute(600) // a token every 100ms
	began := time.Now()

	var admitted int
	for range 3 {
		for i, l := range lims {
			d := allow(t, l, "key-1", PerMinute(3), tok)
			if d.Source != SourceRedis {
				t.Fatalf("replica %d: Source = %q", i, d.Source)
			}
			if d.Allowed {
				admitted++
				if err := l.Charge(context.Background(), "key-1", tok, 100); err != nil {
					t.Fatal(err)
				}
				continue
			}
			// Times come from Redis: no replica sees a budget reset 5
			// minutes off.
			slack := time.Since(began) + time.Millisecond
			within(t, "RetryAfter", d.RetryAfter, 20*time.Second-slack, 20*time.Second)
			within(t, "Requests.Reset", d.Requests.Reset, time.Minute-slack, time.Minute)
			within(t, "Tokens.Reset", d.Tokens.Reset, 30*time.Second-slack, 30*time.Second)
		}
	}
	if admitted != 3 {
		t.Errorf("admitted %d, want 3", admitted)
	}
}
