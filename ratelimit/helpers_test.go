package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// fakeClock is a settable clock for the local limiter.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// testPrefix is a Redis key prefix of this test's own; its keys are deleted
// when the test ends (never FLUSHDB: other tests share the database).
func testPrefix(t testing.TB, rdb *redis.Client) string {
	t.Helper()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	prefix := "bulkhead-test:rl:" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
		if err := iter.Err(); err != nil {
			t.Logf("deleting test keys under %s: %v", prefix, err)
		}
	})
	return prefix
}

// backend is a Limiter under test and the clock it decides on.
type backend struct {
	lim    *Limiter
	source Source
	// wait lets d pass on the limiter's clock.
	wait func(d time.Duration)
	// now reads the limiter's clock as an offset: the fake clock for the
	// local limiter, real time for Redis (whose TIME runs at the same pace
	// on this host).
	now  func() time.Duration
	real bool
	// slow is set by late when a real-time attempt overran its margin.
	slow *bool
}

// elapsed bounds the time that passed on the limiter's clock since t0, a
// reading of now: exact on the fake clock, plus a millisecond of rounding
// between the two real clocks. Real-time checks use it as their slack, so
// a loaded machine widens the bounds instead of failing them.
func (b backend) elapsed(t0 time.Duration) time.Duration {
	d := b.now() - t0
	if b.real {
		d += time.Millisecond
	}
	return d
}

// late reports whether a real-time attempt's steps since t0 took longer
// than its timing margin allows; on a loaded machine an exact count cannot
// be expected from real time. The caller then returns at once, and
// forEachBackend runs the attempt again on a fresh budget; only an attempt
// that was on time is checked, and the local backend runs the same steps
// exactly on a fake clock.
func (b backend) late(t *testing.T, t0, margin time.Duration) bool {
	t.Helper()
	if d := b.now() - t0; b.real && d >= margin {
		t.Logf("attempt overran its timing margin (%v for steps that must take under %v); retrying", d, margin)
		*b.slow = true
		return true
	}
	return false
}

// redisAttempts bounds the retries of a real-time test that keeps running
// late: after that the test fails, so that CI never passes it unchecked.
const redisAttempts = 5

// forEachBackend runs fn against the local limiter on a fake clock and
// against Redis in real time, each fresh.
func forEachBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	t.Helper()
	t.Run("local", func(t *testing.T) {
		clk := newFakeClock()
		origin := clk.Now()
		fn(t, backend{
			lim:    New(nil, Options{Now: clk.Now}),
			source: SourceLocal,
			wait:   clk.Advance,
			now:    func() time.Duration { return clk.Now().Sub(origin) },
		})
	})
	t.Run("redis", func(t *testing.T) {
		rdb := storetest.Redis(t)
		for attempt := 1; attempt <= redisAttempts; attempt++ {
			slow := false
			t.Run(fmt.Sprintf("attempt %d", attempt), func(t *testing.T) {
				origin := time.Now()
				fn(t, backend{
					lim:    New(rdb, Options{Prefix: testPrefix(t, rdb), Timeout: 5 * time.Second}),
					source: SourceRedis,
					wait:   time.Sleep,
					now:    func() time.Duration { return time.Since(origin) },
					real:   true,
					slow:   &slow,
				})
			})
			if !slow {
				return
			}
		}
		t.Fatalf("every one of %d attempts overran its timing margin: the machine was too slow to check this in real time", redisAttempts)
	})
}

// within fails unless lo <= got <= hi.
func within(t *testing.T, what string, got, lo, hi time.Duration) {
	t.Helper()
	if got < lo || got > hi {
		t.Errorf("%s = %v, want in [%v, %v]", what, got, lo, hi)
	}
}
