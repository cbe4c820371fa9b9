package gateway

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// deployment is a Redis of the test's own in cluster or sentinel mode,
// and how to kill its master at the worst moment.
type deployment struct {
	mode, url string
	// victim names the master to kill: for a cluster, the one serving the
	// invalidation channel's slot; for Sentinel, the master.
	victim func(t *testing.T) string
	// onVictim reports whether a limiter key lives on the victim (always
	// with Sentinel, where one master holds everything).
	onVictim func(t *testing.T, redisKey string) bool
	// kill kills the victim and waits until its replica has taken over.
	kill func(t *testing.T)
}

// Two gateway replicas in front of a Redis Cluster (three masters, each
// with a replica) and in front of a Sentinel-watched master and replica,
// through the client BULKHEAD_REDIS_MODE selects: limits are exact across
// the replicas and never shared between tenants, L2 serves the second
// replica, a revocation reaches both within a second; then the master is
// killed under load, and no request fails while its replica takes over.
func TestSharedRedisDeployments(t *testing.T) {
	t.Run("cluster", func(t *testing.T) {
		c := storetest.StartRedisCluster(t)
		var victim *storetest.RedisServer
		testSharedRedis(t, deployment{
			mode: config.RedisCluster, url: c.URL(),
			victim: func(t *testing.T) string {
				victim = c.MasterOf(t, auth.InvalidationChannel)
				return victim.Addr
			},
			onVictim: func(t *testing.T, k string) bool { return c.MasterOf(t, k) == victim },
			kill: func(t *testing.T) {
				victim.Kill()
				c.WaitHealthy(t, 30*time.Second)
			},
		})
	})
	t.Run("sentinel", func(t *testing.T) {
		s := storetest.StartRedisSentinel(t)
		var victim *storetest.RedisServer
		testSharedRedis(t, deployment{
			mode: config.RedisSentinel, url: s.URL(),
			victim: func(t *testing.T) string {
				victim = s.Master(t)
				return victim.Addr
			},
			onVictim: func(*testing.T, string) bool { return true },
			kill: func(t *testing.T) {
				victim.Kill()
				s.WaitFailover(t, victim, 30*time.Second)
			},
		})
	})
}

func testSharedRedis(t *testing.T, d deployment) {
	mod := func(c *config.Config) {
		c.RedisMode, c.RedisURL = d.mode, config.Secret(d.url)
		c.RedisTimeout = time.Second // a loaded test machine; the maximum
	}
	one, two := newHarness(t, mod), newHarness(t, mod)
	replicas := []*harness{one, two}
	// The harnesses share this prefix, so they share budgets (harness.go).
	limitKey := func(id uuid.UUID) string { return "bulkhead:rl:test:" + t.Name() + ":{" + id.String() + "}:r" }
	ctx := context.Background()

	revoked := func(t *testing.T, key string, k store.Key) {
		t.Helper()
		if _, err := one.admin.RevokeKey(ctx, k.ID); err != nil {
			t.Fatal(err)
		}
		if err := auth.Revoke(ctx, one.rdb, time.Hour, k.Hash); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for i, h := range replicas {
			for {
				r := h.do("POST", "/v1/chat/completions", chatBody, bearer(key)...)
				if r.status == 401 {
					t.Logf("replica %d rejects the revoked key %s after revocation", i+1, time.Since(start))
					break
				}
				if time.Since(start) > time.Second {
					t.Fatalf("replica %d still answers %d a second after revocation", i+1, r.status)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}

	t.Run("limits", func(t *testing.T) {
		// 20 per minute, decided in Redis per request (below the lease
		// threshold): 40 requests at once through both replicas admit
		// exactly 20, plus one per 3s the burst took. Another tenant's
		// budget is untouched.
		const rpm, tries = 20, 40
		_, keyA, _ := one.tenant(rpm)
		_, keyB, _ := one.tenant(rpm)
		start := time.Now()
		statuses := make(chan int, tries)
		var wg sync.WaitGroup
		for i := range tries {
			wg.Go(func() { statuses <- replicas[i%2].do("POST", "/v1/chat/completions", chatBody, bearer(keyA)...).status })
		}
		wg.Wait()
		close(statuses)
		refill := int(time.Since(start) / (time.Minute / rpm))
		count := map[int]int{}
		for s := range statuses {
			count[s]++
		}
		if count[200] < rpm || count[200] > rpm+refill || count[200]+count[429] != tries {
			t.Errorf("statuses %v of %d requests on %d per minute (%d refilled meanwhile)", count, tries, rpm, refill)
		}
		for i, h := range replicas {
			if r := h.do("POST", "/v1/chat/completions", chatBody, bearer(keyB)...); r.status != 200 {
				t.Errorf("replica %d: another tenant's key after the first spent its budget: %d", i+1, r.status)
			}
		}
	})

	t.Run("L2", func(t *testing.T) {
		_, key, _ := one.tenant(1000)
		before := two.auth.Stats()
		for i, h := range replicas {
			if r := h.do("POST", "/v1/chat/completions", chatBody, bearer(key)...); r.status != 200 {
				t.Fatalf("replica %d: %d %s", i+1, r.status, r.body)
			}
		}
		if s := two.auth.Stats(); s.L2Hits != before.L2Hits+1 || s.L3Lookups != before.L3Lookups {
			t.Errorf("second replica %+v -> %+v, want one L2 hit and no database look-up", before, s)
		}
	})

	t.Run("revocation", func(t *testing.T) {
		_, key, k := one.tenant(1000)
		for i, h := range replicas {
			if r := h.do("POST", "/v1/chat/completions", chatBody, bearer(key)...); r.status != 200 {
				t.Fatalf("replica %d before revocation: %d %s", i+1, r.status, r.body)
			}
		}
		revoked(t, key, k)
	})

	// Last: it kills the master.
	t.Run("master killed under load", func(t *testing.T) {
		victim := d.victim(t)
		// Busy keys (leases), at least one of them held by the victim,
		// and a small one decided per request.
		var keys []string
		for onIt := false; len(keys) < 6 || !onIt; {
			_, key, k := one.tenant(1_000_000)
			keys = append(keys, key)
			onIt = onIt || d.onVictim(t, limitKey(k.ID))
			if len(keys) > 60 {
				t.Fatal("no key's budget lands on the victim")
			}
		}
		_, small, _ := one.tenant(100)
		keys = append(keys, small)
		purges := [2]uint64{one.auth.Stats().Purges, two.auth.Stats().Purges}

		stop := make(chan struct{})
		var mu sync.Mutex
		count := map[int]int{}
		var wg sync.WaitGroup
		for g := range 6 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					r := replicas[(g+i)%2].do("POST", "/v1/chat/completions", chatBody, bearer(keys[(g+i)%len(keys)])...)
					mu.Lock()
					count[r.status]++
					mu.Unlock()
					if r.status != 200 && r.status != 429 {
						t.Errorf("status %d during the failover: %s", r.status, r.body)
					}
				}
			})
		}
		time.Sleep(300 * time.Millisecond)
		killed := time.Now()
		d.kill(t)
		failedOver := time.Since(killed)
		// Load goes on until both limiters decide in Redis again.
		deadline := time.Now().Add(15 * time.Second)
		for _, h := range replicas {
			for s := h.limiter.Stats(); s.Fallbacks == 0 || s.Recoveries < s.Fallbacks; s = h.limiter.Stats() {
				if time.Now().After(deadline) {
					t.Errorf("a replica's limiter has not returned to Redis 15s after the kill: %+v", s)
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		back := time.Since(killed)
		close(stop)
		wg.Wait()
		t.Logf("killed master %s: replica took over after %s, limiters back in Redis after %s; statuses %v",
			victim, failedOver, back, count)
		if count[200] == 0 {
			t.Error("no request succeeded")
		}

		// Both replicas resubscribe to invalidations and purge their L1.
		for i, h := range replicas {
			start := time.Now()
			for h.auth.Stats().Purges <= purges[i] {
				if time.Since(start) > 10*time.Second {
					t.Fatalf("replica %d has not resubscribed 10s after the failover", i+1)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		_, key, k := one.tenant(1000)
		for i, h := range replicas {
			if r := h.do("POST", "/v1/chat/completions", chatBody, bearer(key)...); r.status != 200 {
				t.Fatalf("replica %d after the failover: %d %s", i+1, r.status, r.body)
			}
		}
		revoked(t, key, k)
	})
}
