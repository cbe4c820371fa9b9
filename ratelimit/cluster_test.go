package ratelimit_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/ratelimit"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// clusterClient is a client of c built as the gateway builds its own
// (config.RedisOptions in cluster mode), with a deadline that a loaded
// test machine meets.
func clusterClient(t testing.TB, c *storetest.RedisCluster) redis.UniversalClient {
	t.Helper()
	cfg := config.Default()
	cfg.RedisMode, cfg.RedisURL, cfg.RedisTimeout = config.RedisCluster, config.Secret(c.URL()), time.Second
	o, err := cfg.RedisOptions()
	if err != nil {
		t.Fatal(err)
	}
	rdb := o.NewClient()
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// hour is a budget that does not refill during a test: exact counts.
func hour(n int) ratelimit.Limit { return ratelimit.Limit{Rate: n, Period: time.Hour, Burst: n} }

// noErrors fails the test if a Limiter met a Redis error or decided
// anything locally: on a cluster, a script touching keys of two slots
// fails with CROSSSLOT, which the limiter would hide behind its fallback.
func noErrors(t *testing.T, lims ...*ratelimit.Limiter) {
	t.Helper()
	for i, l := range lims {
		if s := l.Stats(); s.RedisErrors != 0 || s.LocalDecisions != 0 || s.Fallbacks != 0 {
			t.Errorf("limiter %d: %d Redis errors, %d local decisions, %d fallbacks", i, s.RedisErrors, s.LocalDecisions, s.Fallbacks)
		}
	}
}

// Two replicas, each with its own cluster client, share every budget
// exactly, whichever master holds the key: each script touches one hash
// slot (the key's request and token budgets carry one hash tag), and so
// does the heartbeat set that counts the replicas.
func TestClusterLimitsExactAcrossReplicas(t *testing.T) {
	c := storetest.StartRedisCluster(t)
	ctx := context.Background()
	newReplica := func(opts ratelimit.Options) *ratelimit.Limiter {
		opts.Timeout = time.Second
		return ratelimit.New(clusterClient(t, c), opts)
	}

	// Keys as the gateway names budgets: key ids, "org:<id>" for JWTs.
	var keys []string
	masters := map[*storetest.RedisServer]bool{}
	for len(keys) < 30 {
		k := uuid.NewString()
		if len(keys)%2 == 1 {
			k = "org:" + k
		}
		keys = append(keys, k)
		masters[c.MasterOf(t, ratelimit.DefaultPrefix+":{"+k+"}:r")] = true
	}
	if len(masters) != 3 {
		t.Fatalf("the keys reach %d masters, want all 3", len(masters))
	}

	t.Run("requests", func(t *testing.T) {
		a, b := newReplica(ratelimit.Options{}), newReplica(ratelimit.Options{})
		const burst, tries = 10, 16
		var wg sync.WaitGroup
		admitted := make([]atomic.Int32, len(keys))
		for i, k := range keys {
			for j := range tries {
				lim := a
				if j%2 == 1 {
					lim = b
				}
				wg.Go(func() {
					d, err := lim.Allow(ctx, k, hour(burst), ratelimit.Limit{})
					if err != nil {
						t.Error(err)
					}
					if d.Allowed {
						admitted[i].Add(1)
					}
				})
			}
		}
		wg.Wait()
		for i := range keys {
			if n := admitted[i].Load(); n != burst {
				t.Errorf("key %d: %d of %d admitted by two replicas, want exactly %d", i, n, tries, burst)
			}
		}
		noErrors(t, a, b)
	})

	t.Run("tokens", func(t *testing.T) {
		a, b := newReplica(ratelimit.Options{}), newReplica(ratelimit.Options{})
		// 1000 tokens: three reservations of 300 fit, a fourth does not;
		// settling one at 100 gives 200 back, leaving 300, which a
		// reservation of 300 then fits exactly.
		tok := hour(1000)
		for _, k := range keys[:6] {
			var wg sync.WaitGroup
			var mu sync.Mutex
			var held []ratelimit.Reservation
			var holder []*ratelimit.Limiter
			for j := range 6 {
				lim := a
				if j%2 == 1 {
					lim = b
				}
				wg.Go(func() {
					if d, err := lim.Allow(ctx, k, ratelimit.Limit{}, tok); err != nil || !d.Allowed {
						t.Errorf("Allow with tokens left: %+v, %v", d, err)
						return
					}
					d, err := lim.Reserve(ctx, k, ratelimit.Limit{}, tok, 300)
					if err != nil {
						t.Error(err)
					}
					if d.Allowed {
						mu.Lock()
						held, holder = append(held, d.Reservation), append(holder, lim)
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if len(held) != 3 {
				t.Fatalf("%d reservations of 300 out of 1000 tokens, want exactly 3", len(held))
			}
			if err := holder[0].Settle(ctx, k, tok, held[0], 100); err != nil {
				t.Fatal(err)
			}
			if d, err := b.Reserve(ctx, k, ratelimit.Limit{}, tok, 301); err != nil || d.Allowed {
				t.Errorf("301 tokens with 300 left: %+v, %v", d, err)
			}
			if d, err := a.Reserve(ctx, k, ratelimit.Limit{}, tok, 300); err != nil || !d.Allowed {
				t.Errorf("300 tokens with 300 left: %+v, %v", d, err)
			}
		}
		noErrors(t, a, b)
	})

	t.Run("leases", func(t *testing.T) {
		a, b := newReplica(ratelimit.Options{Lease: true}), newReplica(ratelimit.Options{Lease: true})
		// 640 requests: leases of 10. Together the replicas never admit
		// more; each may lose at most one lease's unused units.
		const budget = 640
		for _, k := range keys[:3] {
			var admitted atomic.Int32
			var wg sync.WaitGroup
			for j := range 8 {
				lim := a
				if j%2 == 1 {
					lim = b
				}
				wg.Go(func() {
					for range 100 {
						if d, err := lim.Allow(ctx, k, hour(budget), ratelimit.Limit{}); err != nil {
							t.Error(err)
						} else if d.Allowed {
							admitted.Add(1)
						}
					}
				})
			}
			wg.Wait()
			if n := admitted.Load(); n > budget || n < budget-2*10 {
				t.Errorf("leases admitted %d of a budget of %d, want at most the budget and at most two leases fewer", n, budget)
			}
		}
		if a.Stats().Leases == 0 || b.Stats().Leases == 0 {
			t.Errorf("no leases taken: %+v %+v", a.Stats(), b.Stats())
		}
		noErrors(t, a, b)
	})

	t.Run("failure budgets", func(t *testing.T) {
		// The authentication failure budgets' keys: addresses (IPv6 per
		// /64, whose text has colons and a slash) and organizations.
		opts := ratelimit.Options{Prefix: "bulkhead:authfail"}
		a, b := newReplica(opts), newReplica(opts)
		for _, k := range []string{"a:203.0.113.7", "a:2001:db8:1:2::/64", "o:" + uuid.NewString()} {
			for i := range 5 {
				lim := a
				if i%2 == 1 {
					lim = b
				}
				if err := lim.Charge(ctx, k, hour(5), 1); err != nil {
					t.Fatal(err)
				}
			}
			if d, err := b.Allow(ctx, k, ratelimit.Limit{}, hour(5)); err != nil || d.Allowed {
				t.Errorf("%s: a spent failure budget admits: %+v, %v", k, d, err)
			}
		}
		noErrors(t, a, b)
	})

	t.Run("heartbeats", func(t *testing.T) {
		opts := ratelimit.Options{Prefix: "bulkhead-test:hb", Heartbeat: 50 * time.Millisecond}
		a, b := newReplica(opts), newReplica(opts)
		rctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for _, l := range []*ratelimit.Limiter{a, b} {
			wg.Go(func() {
				if err := l.Run(rctx); err != nil {
					t.Error(err)
				}
			})
		}
		defer wg.Wait()
		defer cancel()
		deadline := time.Now().Add(5 * time.Second)
		for a.Stats().Replicas != 2 || b.Stats().Replicas != 2 {
			if time.Now().After(deadline) {
				t.Fatalf("replicas counted: %d and %d, want 2", a.Stats().Replicas, b.Stats().Replicas)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// A master killed under load: no call fails (the local fallback decides
// meanwhile), and once its replica has taken over, the keys it holds are
// decided in Redis again within seconds, not after go-redis's default
// minute between slot-map reloads.
func TestClusterMasterFailover(t *testing.T) {
	c := storetest.StartRedisCluster(t)
	ctx := context.Background()
	lim := ratelimit.New(clusterClient(t, c), ratelimit.Options{Timeout: time.Second, Cooldown: 100 * time.Millisecond})

	var keys []string
	for range 12 {
		keys = append(keys, uuid.NewString())
	}
	victim := c.MasterOf(t, ratelimit.DefaultPrefix+":{"+keys[0]+"}:r")

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var calls, failed atomic.Int64
	for _, k := range keys {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := lim.Allow(ctx, k, hour(1_000_000), ratelimit.Limit{}); err != nil {
					failed.Add(1)
					t.Errorf("Allow during the failover: %v", err)
				}
				calls.Add(1)
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	killed := time.Now()
	victim.Kill()
	c.WaitHealthy(t, 30*time.Second)
	failedOver := time.Since(killed)

	// Decisions for the victim's keys come from Redis again.
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, err := lim.Allow(ctx, keys[0], hour(1_000_000), ratelimit.Limit{})
		if err != nil {
			t.Fatal(err)
		}
		if d.Source == ratelimit.SourceRedis {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("decisions still %q 10s after the failover (%s)", d.Source, failedOver)
		}
		time.Sleep(20 * time.Millisecond)
	}
	back := time.Since(killed)
	close(stop)
	wg.Wait()
	s := lim.Stats()
	t.Logf("master killed: cluster healthy after %s, decisions back in Redis after %s; %d calls, %d local decisions, %d fallbacks",
		failedOver, back, calls.Load(), s.LocalDecisions, s.Fallbacks)
	if failed.Load() != 0 {
		t.Errorf("%d calls failed", failed.Load())
	}
	if s.Fallbacks == 0 || s.Recoveries == 0 {
		t.Errorf("the kill went unnoticed: %+v", s)
	}
}
