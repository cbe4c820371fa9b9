package auth_test

import (
	"context"
	"encoding/hex"
	"net/netip"
	"testing"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway/apikey"
	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// BenchmarkL2HitTopology is BenchmarkAuthenticate's "L2 redis hit" (an L1
// miss answered by Redis: one GET) through the client each
// BULKHEAD_REDIS_MODE builds, against servers of the benchmark's own
// configured alike: a standalone node, and a three-master cluster.
// Only run and ratio the sub-benchmarks of one run: the machine's load
// moves the absolute figures.
func BenchmarkL2HitTopology(b *testing.B) {
	admin, st := storetest.Admin(b), storetest.Open(b, store.Options{})
	ctx := context.Background()
	org, err := admin.CreateOrg(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	key, _ := apikey.Generate(org.ID)
	hash := apikey.Hash([]byte(key))
	if _, err := admin.CreateKey(ctx, store.NewKey{OrgID: org.ID, Hash: hash, DisplayPrefix: apikey.Display(key), Name: "b", RateLimitPerMinute: 1}); err != nil {
		b.Fatal(err)
	}
	cred := []byte(key)
	run := func(b *testing.B, mode, url string) {
		cfg := config.Default()
		cfg.RedisMode, cfg.RedisURL = mode, config.Secret(url)
		o, err := cfg.RedisOptions()
		if err != nil {
			b.Fatal(err)
		}
		rdb := o.NewClient()
		b.Cleanup(func() { rdb.Close() })
		a, err := auth.New(auth.Options{Store: st, Redis: rdb})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := a.Authenticate(ctx, cred, netip.Addr{}); err != nil { // fills L2
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			a.ForgetForTest(hash)
			if _, err := a.Authenticate(ctx, cred, netip.Addr{}); err != nil {
				b.Fatal(err)
			}
		}
		if s := a.Stats(); s.L3Lookups > 1 || s.L2Errors != 0 {
			b.Fatalf("not L2 hits: %+v", s)
		}
	}
	single, cluster := storetest.StartRedisServer(b), storetest.StartRedisCluster(b)
	b.Run("single", func(b *testing.B) { run(b, config.RedisSingle, single.URL()) })
	b.Run("cluster", func(b *testing.B) { run(b, config.RedisCluster, cluster.URL()) })
	// The cluster node that holds the key, through a single-node client:
	// what the cluster costs the server (slot checks, its replica), apart
	// from what the cluster client costs.
	node := cluster.MasterOf(b, "bulkhead:auth:{"+hex.EncodeToString(hash[:])+"}")
	b.Run("cluster node", func(b *testing.B) { run(b, config.RedisSingle, node.URL()) })
}
