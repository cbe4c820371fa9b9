package ratelimit_test

import (
	"context"
	"testing"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/ratelimit"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// BenchmarkAllowRedisTopology is BenchmarkAllowRedis (one request and one
// token budget, one script call per decision) through the client each
// BULKHEAD_REDIS_MODE builds, against servers of the benchmark's own
// configured alike: a standalone node, and a three-master cluster. Only
// ratio the sub-benchmarks of one run: the machine's load moves the
// absolute figures.
func BenchmarkAllowRedisTopology(b *testing.B) {
	limit := ratelimit.PerMinute(1 << 30)
	run := func(b *testing.B, mode, url string) {
		cfg := config.Default()
		cfg.RedisMode, cfg.RedisURL = mode, config.Secret(url)
		o, err := cfg.RedisOptions()
		if err != nil {
			b.Fatal(err)
		}
		rdb := o.NewClient()
		b.Cleanup(func() { rdb.Close() })
		lim := ratelimit.New(rdb, ratelimit.Options{Timeout: config.Default().RedisTimeout})
		ctx := context.Background()
		if _, err := lim.Allow(ctx, "key-1", limit, limit); err != nil { // loads the script
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			d, err := lim.Allow(ctx, "key-1", limit, limit)
			if err != nil || d.Source != ratelimit.SourceRedis {
				b.Fatalf("%+v, %v", d, err)
			}
		}
	}
	single, cluster := storetest.StartRedisServer(b), storetest.StartRedisCluster(b)
	b.Run("single", func(b *testing.B) { run(b, config.RedisSingle, single.URL()) })
	b.Run("cluster", func(b *testing.B) { run(b, config.RedisCluster, cluster.URL()) })
	// The cluster node that holds the key, through a single-node client:
	// what the cluster costs the server (slot checks, its replica), apart
	// from what the cluster client costs.
	node := cluster.MasterOf(b, ratelimit.DefaultPrefix+":{key-1}:r")
	b.Run("cluster node", func(b *testing.B) { run(b, config.RedisSingle, node.URL()) })
}
