package ratelimit

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestLocalSharesOneBudgetBetweenGoroutines(t *testing.T) {
	clk := newFakeClock()
	lim := New(nil, Options{Now: clk.Now})
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() {
			if allow(t, lim, "k", PerMinute(60), Limit{}).Allowed {
				allowed.Add(1)
			}
		})
	}
	wg.Wait()
	if allowed.Load() != 60 {
		t.Errorf("allowed %d, want 60", allowed.Load())
	}
	if s := lim.Stats(); s.LocalDecisions != 200 || s.RedisDecisions != 0 {
		t.Errorf("Stats = %+v", s)
	}
}

func TestLocalMemoryIsBounded(t *testing.T) {
	clk := newFakeClock()
	const maxKeys = 128
	lim := New(nil, Options{Now: clk.Now, LocalMaxKeys: maxKeys})
	for i := range 10_000 {
		allow(t, lim, "key-"+strconv.Itoa(i), PerMinute(10), Limit{})
	}
	if n := lim.local.len(); n > maxKeys {
		t.Errorf("local limiter holds %d keys, bound %d", n, maxKeys)
	}
	evicted := lim.Stats().LocalEvictions
	if evicted == 0 {
		t.Error("no eviction counted, yet live entries were dropped")
	}

	// Entries whose budgets are restored are swept, not evicted.
	for i := range 10_000 {
		clk.Advance(sweepEvery + time.Minute)
		allow(t, lim, "key-"+strconv.Itoa(i), PerMinute(10), Limit{})
	}
	if n := lim.local.len(); n > maxKeys {
		t.Errorf("local limiter holds %d keys, bound %d", n, maxKeys)
	}
	if more := lim.Stats().LocalEvictions - evicted; more != 0 {
		t.Errorf("%d live entries evicted, want 0: restored entries make room", more)
	}
}

func TestLocalClockStepBack(t *testing.T) {
	clk := newFakeClock()
	lim := New(nil, Options{Now: clk.Now})
	limit := Limit{Rate: 1, Period: time.Second, Burst: 1}
	allow(t, lim, "k", limit, Limit{})
	clk.Advance(-time.Hour)
	if allow(t, lim, "k", limit, Limit{}).Allowed {
		t.Error("a clock stepped back refilled the budget")
	}
}
