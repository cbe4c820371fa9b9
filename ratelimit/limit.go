package ratelimit

import "time"

// Limit is a budget of Rate units per Period, of which up to Burst may be
// spent at once. For requests a unit is one request; for tokens it is one
// token.
//
// The budget refills continuously, one unit every Period/Rate (GCRA): a
// Limit of 60 per minute with Burst 60 admits 60 requests at once and then
// one more every second, never more than Burst + Rate in any window of one
// Period.
//
// A Limit whose Rate or Period is not positive, the zero Limit included,
// imposes nothing (see IsZero). A Burst below 1 means Burst = Rate.
type Limit struct {
	Rate   int
	Period time.Duration
	Burst  int
}

// PerMinute returns a limit of n per minute with Burst n: the whole minute's
// budget may be spent at once, as OpenAI's RPM and TPM limits allow. A key
// that spends it all then gets one more unit every minute/n.
func PerMinute(n int) Limit {
	return Limit{Rate: n, Period: time.Minute, Burst: n}
}

// IsZero reports whether l imposes no limit: its Rate or Period is not
// positive. The zero Limit is unlimited.
func (l Limit) IsZero() bool {
	return l.Rate <= 0 || l.Period <= 0
}

// burst is the normalised Burst: at least 1, Rate when unset.
func (l Limit) burst() int {
	if l.Burst < 1 {
		return l.Rate
	}
	return l.Burst
}

// interval is the time one unit takes to refill, in the given unit of time
// (time.Nanosecond for the local limiter, time.Microsecond for the Lua
// script, whose clock is Redis TIME). It is 0 for an unlimited Limit.
func (l Limit) interval(unit time.Duration) float64 {
	if l.IsZero() {
		return 0
	}
	return float64(l.Period) / float64(unit) / float64(l.Rate)
}
