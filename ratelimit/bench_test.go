package ratelimit

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// countHook counts the commands a client sends: each is one round trip
// (nothing here pipelines).
type countHook struct{ n atomic.Int64 }

func (h *countHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// unlimited enough that every benchmark decision admits and writes.
var benchLimit = PerMinute(1 << 30)

func BenchmarkAllowLocal(b *testing.B) {
	lim := New(nil, Options{})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if d, _ := lim.Allow(ctx, "key-1", benchLimit, benchLimit); !d.Allowed {
			b.Fatal("rejected")
		}
	}
}

func BenchmarkAllowLocalParallel(b *testing.B) {
	lim := New(nil, Options{})
	ctx := context.Background()
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		key := "key-" + strconv.FormatInt(next.Add(1), 10)
		for pb.Next() {
			lim.Allow(ctx, key, benchLimit, benchLimit)
		}
	})
}

// benchRedis returns a Limiter with opts on the test Redis, and a hook
// counting its round trips.
func benchRedis(b *testing.B, opts Options) (*Limiter, *countHook) {
	rdb := storetest.Redis(b)
	hook := &countHook{}
	rdb.AddHook(hook)
	opts.Prefix = testPrefix(b, rdb)
	return New(rdb, opts), hook
}

func BenchmarkAllowRedis(b *testing.B) {
	lim, hook := benchRedis(b, Options{})
	ctx := context.Background()
	if _, err := lim.Allow(ctx, "key-1", benchLimit, benchLimit); err != nil { // loads the script
		b.Fatal(err)
	}
	hook.n.Store(0)
	b.ReportAllocs()
	for b.Loop() {
		d, err := lim.Allow(ctx, "key-1", benchLimit, benchLimit)
		if err != nil || d.Source != SourceRedis {
			b.Fatalf("%+v, %v", d, err)
		}
	}
	b.ReportMetric(float64(hook.n.Load())/float64(b.N), "roundtrips/op")
}

func BenchmarkCharge(b *testing.B) {
	b.Run("redis", func(b *testing.B) {
		lim, hook := benchRedis(b, Options{})
		ctx := context.Background()
		if err := lim.Charge(ctx, "key-1", benchLimit, 1); err != nil {
			b.Fatal(err)
		}
		hook.n.Store(0)
		b.ReportAllocs()
		for b.Loop() {
			if err := lim.Charge(ctx, "key-1", benchLimit, 100); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(hook.n.Load())/float64(b.N), "roundtrips/op")
	})
	b.Run("local", func(b *testing.B) {
		lim := New(nil, Options{})
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			lim.Charge(ctx, "key-1", benchLimit, 100)
		}
	})
}

// BenchmarkAllowRedisLease is BenchmarkAllowRedis with Options.Lease on a
// request-only budget: admissions come from local leases of benchLimit's
// Burst/64 units.
func BenchmarkAllowRedisLease(b *testing.B) {
	lim, hook := benchRedis(b, Options{Lease: true})
	ctx := context.Background()
	if _, err := lim.Allow(ctx, "key-1", benchLimit, Limit{}); err != nil { // loads the script
		b.Fatal(err)
	}
	hook.n.Store(0)
	b.ReportAllocs()
	for b.Loop() {
		d, err := lim.Allow(ctx, "key-1", benchLimit, Limit{})
		if err != nil || !d.Allowed || d.Source != SourceRedis {
			b.Fatalf("%+v, %v", d, err)
		}
	}
	b.ReportMetric(float64(hook.n.Load())/float64(b.N), "roundtrips/op")
}

func BenchmarkAllowRedisLeaseParallel(b *testing.B) {
	lim, hook := benchRedis(b, Options{Lease: true})
	ctx := context.Background()
	if _, err := lim.Allow(ctx, "key-1", benchLimit, Limit{}); err != nil {
		b.Fatal(err)
	}
	hook.n.Store(0)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if d, err := lim.Allow(ctx, "key-1", benchLimit, Limit{}); err != nil || !d.Allowed {
				b.Errorf("%+v, %v", d, err)
				return
			}
		}
	})
	b.ReportMetric(float64(hook.n.Load())/float64(b.N), "roundtrips/op")
}

// BenchmarkReserveSettle is the token path a request with a token limit
// adds after Allow: one Reserve before forwarding, one Settle after.
func BenchmarkReserveSettle(b *testing.B) {
	b.Run("redis", func(b *testing.B) {
		lim, hook := benchRedis(b, Options{})
		ctx := context.Background()
		if _, err := lim.Reserve(ctx, "key-1", benchLimit, benchLimit, 100); err != nil { // loads the script
			b.Fatal(err)
		}
		hook.n.Store(0)
		b.ReportAllocs()
		for b.Loop() {
			d, err := lim.Reserve(ctx, "key-1", benchLimit, benchLimit, 300)
			if err != nil || !d.Allowed || d.Source != SourceRedis {
				b.Fatalf("%+v, %v", d, err)
			}
			if err := lim.Settle(ctx, "key-1", benchLimit, d.Reservation, 100); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(hook.n.Load())/float64(b.N), "roundtrips/op")
	})
	b.Run("local", func(b *testing.B) {
		lim := New(nil, Options{})
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			d, _ := lim.Reserve(ctx, "key-1", benchLimit, benchLimit, 300)
			lim.Settle(ctx, "key-1", benchLimit, d.Reservation, 100)
		}
	})
}
