package ratelimit

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkheadhq/bulkhead/store/storetest"
)

func TestLeaseSizeAndLifetime(t *testing.T) {
	for _, tc := range []struct {
		limit Limit
		n     int
		life  time.Duration
	}{
		{PerMinute(60), 1, time.Second},
		{PerMinute(127), 1, 60 * time.Second / 127},
		{PerMinute(128), 2, 2 * 60 * time.Second / 128},
		{PerMinute(6400), 100, 937500 * time.Microsecond},
		{Limit{Rate: 6400, Period: time.Hour, Burst: 6400}, 100, time.Second},
		{Limit{Rate: 10, Period: time.Second, Burst: 640}, 10, time.Second},
	} {
		n := leaseSize(tc.limit)
		if n != tc.n {
			t.Errorf("leaseSize(%+v) = %d, want %d", tc.limit, n, tc.n)
		}
		if got := leaseLifetime(tc.limit, n); got != tc.life {
			t.Errorf("leaseLifetime(%+v, %d) = %v, want %v", tc.limit, n, got, tc.life)
		}
	}
}

// With n = 1 a lease is the per-request script: exactly the limit across
// replicas, as without leases.
func TestLeaseSmallLimitIsExact(t *testing.T) {
	lims := replicas(t, 3, Options{Timeout: 5 * time.Second, Lease: true})
	const calls = 200
	allowed, _, took := burst(t, lims, calls, PerMinute(60))
	extra := int64(took / time.Second)
	if allowed < 60 || allowed > 60+extra {
		t.Errorf("allowed %d of %d, want exactly 60", allowed, calls)
	}
	for _, l := range lims {
		if s := l.Stats(); s.Leases != 0 || s.LeaseDecisions != 0 {
			t.Errorf("Stats = %+v, want no leases for n = 1", s)
		}
	}
}

// THREATS 45 with leases: three replicas leasing 100 units at a time never
// admit more than the shared budget, and leave at most n-1 units each
// unused.
func TestLeaseReplicasNeverExceedBudget(t *testing.T) {
	lims := replicas(t, 3, Options{Timeout: 5 * time.Second, Lease: true})
	limit := PerMinute(6400) // n = 100, a unit every 9.375ms
	const (
		calls   = 10_000
		workers = 48
	)
	var allowed, rejected, next atomic.Int64
	start := make(chan struct{})
	began := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		lim := lims[w%len(lims)]
		wg.Go(func() {
			<-start
			for next.Add(1) <= calls {
				d, err := lim.Allow(context.Background(), "key-1", limit, Limit{})
				if err != nil || d.Source != SourceRedis {
					t.Errorf("Allow: %+v, %v", d, err)
					return
				}
				if d.Allowed {
					allowed.Add(1)
				} else {
					rejected.Add(1)
					if d.RetryAfter <= 0 || d.Requests.Remaining != 0 {
						t.Errorf("rejected: %+v", d)
					}
				}
			}
		})
	}
	close(start)
	wg.Wait()
	took := time.Since(began)
	// The budget refills a unit every 9.375ms while the test runs.
	refill := int64(took/(9375*time.Microsecond)) + 1
	n := allowed.Load()
	if n > 6400+refill || n < 6400-3*100 || n+rejected.Load() != calls {
		t.Errorf("allowed %d, rejected %d in %v; want %d..%d allowed", n, rejected.Load(), took, 6400-300, 6400+refill)
	}
	var leases, leased uint64
	for _, l := range lims {
		s := l.Stats()
		leases += s.Leases
		leased += s.LeaseDecisions
		if s.LocalDecisions != 0 || s.RedisErrors != 0 {
			t.Errorf("Stats = %+v", s)
		}
	}
	t.Logf("%d calls through 3 leasing replicas in %v: %d allowed, %d leases, %d decided from leases",
		calls, took.Round(time.Millisecond), n, leases, leased)
}

// Leased units are void after the lease's lifetime: they stay spent in
// Redis and are not admitted.
func TestLeaseExpires(t *testing.T) {
	rdb := storetest.Redis(t)
	hook := &countHook{}
	rdb.AddHook(hook)
	lim := New(rdb, Options{Prefix: testPrefix(t, rdb), Timeout: 5 * time.Second, Lease: true})
	limit := Limit{Rate: 6400, Period: time.Hour, Burst: 6400} // n = 100, lifetime 1s, a unit every 562.5ms

	d := allow(t, lim, "k", limit, Limit{})
	if !d.Allowed || d.Requests.Remaining != 6399 || d.Requests.Limit != 6400 {
		t.Fatalf("first: %+v, want admitted with 6399 remaining", d)
	}
	sent := hook.n.Load()
	d = allow(t, lim, "k", limit, Limit{})
	if !d.Allowed || d.Requests.Remaining != 6398 || hook.n.Load() != sent {
		t.Fatalf("second: %+v, %d commands; want admitted from the lease with 6398 remaining", d, hook.n.Load()-sent)
	}
	began := time.Now()
	time.Sleep(time.Second + 50*time.Millisecond)
	d = allow(t, lim, "k", limit, Limit{})
	if hook.n.Load() != sent+1 {
		t.Errorf("after expiry: %d commands, want 1 (a new lease)", hook.n.Load()-sent)
	}
	// Redis spent 200 units; the 98 left of the first lease are lost, and
	// a unit refilled every 562.5ms since.
	refilled := int(time.Since(began)/(562500*time.Microsecond)) + 1
	if !d.Allowed || d.Requests.Remaining < 6299 || d.Requests.Remaining > 6299+refilled {
		t.Errorf("after expiry: %+v, want admitted with 6299..%d remaining", d, 6299+refilled)
	}
	if s := lim.Stats(); s.Leases != 2 || s.LeaseDecisions != 1 || s.RedisDecisions != 3 {
		t.Errorf("Stats = %+v, want 2 leases, 1 decision from a lease, 3 in all", s)
	}
}

// A lease costs one round trip per n admissions, with concurrent callers
// waiting for the one fetching.
func TestLeaseRoundTrips(t *testing.T) {
	rdb := storetest.Redis(t)
	hook := &countHook{}
	rdb.AddHook(hook)
	lim := New(rdb, Options{Prefix: testPrefix(t, rdb), Timeout: 5 * time.Second, Lease: true})
	limit := PerMinute(6400) // n = 100
	const admissions = 1000
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for next.Add(1) <= admissions {
				d, err := lim.Allow(context.Background(), "k", limit, Limit{})
				if err != nil || !d.Allowed {
					t.Errorf("Allow: %+v, %v", d, err)
					return
				}
			}
		})
	}
	wg.Wait()
	// Loading the script costs one more round trip (NOSCRIPT, then EVAL);
	// a slow machine may let a lease expire.
	if n := hook.n.Load(); n > admissions/100+3 {
		t.Errorf("%d round trips for %d admissions, want at most %d", n, admissions, admissions/100+3)
	}
	if s := lim.Stats(); s.RedisDecisions != admissions || s.Leases > admissions/100+2 {
		t.Errorf("Stats = %+v", s)
	}
	t.Logf("%d round trips for %d admissions", hook.n.Load(), admissions)
}

// When Redis grants nothing the key is rejected with Redis's RetryAfter,
// and then locally until it has passed.
func TestLeaseRejectsWhenSpent(t *testing.T) {
	rdb := storetest.Redis(t)
	hook := &countHook{}
	rdb.AddHook(hook)
	lim := New(rdb, Options{Prefix: testPrefix(t, rdb), Timeout: 5 * time.Second, Lease: true})
	limit := Limit{Rate: 128, Period: time.Hour, Burst: 128} // n = 2, a unit every 28.125s
	interval := time.Hour / 128
	began := time.Now()
	for i := range 128 {
		d := allow(t, lim, "k", limit, Limit{})
		if !d.Allowed || d.Requests.Remaining != 127-i {
			t.Fatalf("request %d: %+v, want admitted with %d remaining", i+1, d, 127-i)
		}
	}
	if n := hook.n.Load(); n > 64+2 {
		t.Errorf("%d round trips for 128 admissions with n = 2", n)
	}
	sent := hook.n.Load()
	for i := range 3 {
		d := allow(t, lim, "k", limit, Limit{})
		if d.Allowed || d.Requests.Remaining != 0 || d.Requests.Limit != 128 {
			t.Fatalf("request %d: %+v, want rejected", 129+i, d)
		}
		// 50 ms of slack: Redis's TIME is a wall clock, time.Since a
		// monotonic one (a 28 s interval still tells a wrong answer apart).
		within(t, "RetryAfter", d.RetryAfter, interval-time.Since(began)-50*time.Millisecond, interval)
		within(t, "Reset", d.Requests.Reset, time.Hour-time.Since(began)-50*time.Millisecond, time.Hour)
	}
	if n := hook.n.Load() - sent; n != 1 {
		t.Errorf("%d round trips for 3 rejections, want 1", n)
	}
	// Another limit for the key drops what was learnt under the old one.
	if d := allow(t, lim, "k", Limit{Rate: 256, Period: time.Hour, Burst: 256}, Limit{}); !d.Allowed {
		t.Errorf("after raising the limit: %+v, want admitted", d)
	}
}

// A Redis failure while fetching a lease falls back per FailMode; leased
// units are still admitted while Redis is down.
func TestLeaseFallback(t *testing.T) {
	limit := PerMinute(6400) // n = 100
	for _, mode := range []FailMode{FailLocal, FailClosed} {
		t.Run(mode.String(), func(t *testing.T) {
			f := &fakeRedis{reply: []any{int64(100), int64(6300), int64(60_000_000), int64(0)}}
			lim := newLimiter(f, Options{Lease: true, FailMode: mode, Cooldown: time.Hour})
			for i := range 50 {
				if d := allow(t, lim, "k", limit, Limit{}); !d.Allowed || d.Source != SourceRedis || d.Requests.Remaining != 6399-i {
					t.Fatalf("request %d: %+v", i+1, d)
				}
			}
			f.err = errors.New("connection refused")
			for i := range 50 {
				if d := allow(t, lim, "k", limit, Limit{}); !d.Allowed || d.Source != SourceRedis {
					t.Fatalf("request %d from the lease while Redis is down: %+v", 51+i, d)
				}
			}
			if f.calls != 1 {
				t.Fatalf("Redis called %d times for one lease", f.calls)
			}
			for range 5 {
				d, err := lim.Allow(context.Background(), "k", limit, Limit{})
				checkFallback(t, mode, d, err)
			}
			if f.calls != 2 {
				t.Errorf("Redis called %d times, want 2 (the breaker opened)", f.calls)
			}
			s := lim.Stats()
			if s.RedisErrors != 1 || s.Fallbacks != 1 || s.Leases != 1 || s.LeaseDecisions != 99 {
				t.Errorf("Stats = %+v", s)
			}
			if mode == FailLocal && s.LocalDecisions != 5 {
				t.Errorf("LocalDecisions = %d, want 5", s.LocalDecisions)
			}
			// Redis is back: the probe takes a lease.
			f.err = nil
			lim.openUntil.Store(1)
			if d := allow(t, lim, "k", limit, Limit{}); !d.Allowed || d.Source != SourceRedis {
				t.Errorf("after recovery: %+v", d)
			}
			if s := lim.Stats(); s.Recoveries != 1 || s.Leases != 2 {
				t.Errorf("after recovery: Stats = %+v", s)
			}
		})
	}
}

// An admission from a lease does no I/O and allocates nothing.
func TestLeaseAdmissionDoesNotAllocate(t *testing.T) {
	f := &fakeRedis{reply: []any{int64(1000), int64(0), int64(0), int64(0)}}
	lim := newLimiter(f, Options{Lease: true})
	limit := PerMinute(64_000) // n = 1000
	ctx := context.Background()
	allocs := testing.AllocsPerRun(500, func() {
		if d, err := lim.Allow(ctx, "key-1", limit, Limit{}); err != nil || !d.Allowed {
			t.Fatalf("%+v, %v", d, err)
		}
	})
	if allocs != 0 || f.calls != 1 {
		t.Errorf("%v allocations per admission, %d calls; want 0 and 1", allocs, f.calls)
	}
}

// Lease state is bounded by LocalMaxKeys.
func TestLeaseStateIsBounded(t *testing.T) {
	f := &fakeRedis{reply: []any{int64(100), int64(0), int64(0), int64(0)}}
	lim := newLimiter(f, Options{Lease: true, LocalMaxKeys: 128})
	for i := range 10_000 {
		allow(t, lim, "key-"+string(rune('a'+i%26))+time.Duration(i).String(), PerMinute(6400), Limit{})
	}
	n := 0
	for i := range lim.leases.shards {
		n += len(lim.leases.shards[i].m)
	}
	if n > 128+localShards {
		t.Errorf("%d lease entries, want at most about 128", n)
	}
}
