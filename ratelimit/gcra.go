package ratelimit

import (
	"math"
	"time"
)

// The GCRA state of one budget is kept as (level, last): level is how many
// units were outstanding at time last, and the budget is admissible while
// level+cost <= burst. It is the theoretical arrival time of the textbook
// GCRA in another form, TAT = last + level×interval, chosen because Lua
// numbers are doubles: an absolute TAT in microseconds since 1970 has a
// resolution of 0.25 µs, coarser than the interval of a large token budget
// (150M tokens per minute is one token every 0.4 µs), while a level stays
// small and exact. The Lua script in lua.go and the local limiter in
// local.go implement the same arithmetic; keep them in step.

// epsilon absorbs the rounding of level arithmetic at the exact boundary,
// so that a budget of n admits exactly n, never n-1.
const epsilon = 1e-9

// bucket is one budget's GCRA state for the local limiter; last is in
// nanoseconds of Options.Now.
type bucket struct {
	level float64
	last  int64
}

// levelAt is the bucket's level at now for a unit refill interval (ns).
func (b bucket) levelAt(now int64, interval float64) float64 {
	if b.level <= 0 {
		return 0
	}
	l := b.level
	if elapsed := now - b.last; elapsed > 0 {
		l -= float64(elapsed) / interval
	}
	if l < 0 {
		return 0
	}
	return l
}

// over is how far beyond the burst spending cost units would go, in units,
// or 0 when they fit. A cost larger than the burst fits a fully restored
// budget (level 0) and nothing else: the local fallback charges a replica's
// spending times the replica count (see local.go), and each replica may
// still take one request into an untouched budget.
func over(level, cost, burst float64) float64 {
	if o := level + cost - max(burst, cost); o > epsilon {
		return o
	}
	return 0
}

// remainingShare is how many whole units may be spent at a level when each
// costs w.
func remainingShare(level, burst, w float64) int {
	r := math.Floor((burst-level)/w + epsilon)
	if r < 0 {
		return 0
	}
	return int(r)
}

// maxDuration caps conversions: a key deep in debt must not overflow.
const maxDuration = time.Duration(math.MaxInt64 / 2)

// durationOf converts a float of time units to a Duration, rounding up.
func durationOf(units float64, unit time.Duration) time.Duration {
	if units <= 0 {
		return 0
	}
	ns := math.Ceil(units * float64(unit))
	if ns >= float64(maxDuration) {
		return maxDuration
	}
	return time.Duration(ns)
}
