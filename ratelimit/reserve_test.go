package ratelimit

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func reserve(t *testing.T, lim *Limiter, key string, req, tok Limit, tokens int) Decision {
	t.Helper()
	d, err := lim.Reserve(context.Background(), key, req, tok, tokens)
	if err != nil {
		t.Fatalf("Reserve(%q, %d): %v", key, tokens, err)
	}
	return d
}

func settle(t *testing.T, lim *Limiter, key string, tok Limit, r Reservation, used int) {
	t.Helper()
	if err := lim.Settle(context.Background(), key, tok, r, used); err != nil {
		t.Fatalf("Settle(%q, %+v, %d): %v", key, r, used, err)
	}
}

// Twenty requests of 70 tokens at once on a budget of 300 tokens through
// three replicas: 4 are admitted (280 tokens), not all 20 as when tokens
// were only checked at admission. Leases change nothing for calls with a
// token limit. Requests refused for tokens give their request unit back.
func TestReserveBoundsConcurrentBurst(t *testing.T) {
	for _, lease := range []bool{false, true} {
		t.Run(fmt.Sprintf("lease=%v", lease), func(t *testing.T) {
			lims := replicas(t, 3, Options{Timeout: 5 * time.Second, Lease: lease})
			req := PerMinute(1000) // leased when the token limit is unlimited
			tok := PerMinute(300)  // 5 tokens a second
			var admitted, refused atomic.Int64
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range 20 {
				lim := lims[i%len(lims)]
				wg.Go(func() {
					<-start
					d, err := lim.Allow(context.Background(), "k", req, tok)
					if err != nil || !d.Allowed || d.Source != SourceRedis {
						t.Errorf("Allow: %+v, %v", d, err)
						return
					}
					d, err = lim.Reserve(context.Background(), "k", req, tok, 70)
					if err != nil || d.Source != SourceRedis {
						t.Errorf("Reserve: %+v, %v", d, err)
						return
					}
					if d.Allowed {
						admitted.Add(1)
						if d.Reservation != (Reservation{Tokens: 70, Source: SourceRedis}) {
							t.Errorf("Reservation = %+v", d.Reservation)
						}
					} else {
						refused.Add(1)
					}
				})
			}
			began := time.Now()
			close(start)
			wg.Wait()
			// A fifth reservation needs 50 tokens to refill: 10 seconds.
			if took := time.Since(began); admitted.Load() != 4 && took < 10*time.Second {
				t.Errorf("admitted %d of 20 requests of 70 tokens on a budget of 300 (in %v), want 4", admitted.Load(), took)
			}
			d := allow(t, lims[0], "k", req, tok)
			if !d.Allowed || d.Tokens.Remaining != 300-280 && d.Tokens.Remaining != 300-280+1 {
				t.Errorf("after the burst: %+v, want 20 tokens left", d)
			}
			// 4 admitted and this Allow: 5 request units spent, the 16
			// refused for tokens gave theirs back.
			if got := d.Requests.Remaining; got < 995 || got > 995+int(time.Since(began)/(60*time.Millisecond))+1 {
				t.Errorf("requests remaining %d, want 995 (refused requests spend no request unit)", got)
			}
		})
	}
}

// Settle charges the usage less the reservation: a request reserving 1000
// and using 10 gives back 990; one using more than it reserved takes the
// rest, past empty (debt).
func TestSettleReconcilesTheReservation(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		req := Limit{Rate: 100, Period: time.Hour, Burst: 100}
		tok := Limit{Rate: 1000, Period: time.Hour, Burst: 1000} // a token every 3.6s
		t0 := b.now()
		allow(t, b.lim, "k", req, tok)
		d := reserve(t, b.lim, "k", req, tok, 1000)
		if !d.Allowed || d.Tokens.Remaining != 0 || d.Reservation != (Reservation{Tokens: 1000, Source: b.source}) {
			t.Fatalf("Reserve(1000): %+v", d)
		}
		if d := allow(t, b.lim, "k", req, tok); d.Allowed {
			t.Fatalf("admitted with every token set aside: %+v", d)
		}
		settle(t, b.lim, "k", tok, d.Reservation, 10)
		d = allow(t, b.lim, "k", req, tok)
		if !d.Allowed || d.Tokens.Remaining != 990 {
			t.Fatalf("after settling 10 of 1000: %+v, want 990 tokens left", d)
		}
		// 990 left: 991 do not fit, and waiting for the 991st takes one
		// token's refill.
		if d := reserve(t, b.lim, "k", req, tok, 991); d.Allowed || d.Reservation != (Reservation{}) {
			t.Fatalf("Reserve(991) with 990 left: %+v", d)
		} else {
			within(t, "RetryAfter", d.RetryAfter, 3600*time.Millisecond-b.elapsed(t0), 3600*time.Millisecond)
		}
		d = reserve(t, b.lim, "k", req, tok, 990)
		if !d.Allowed {
			t.Fatalf("Reserve(990) with 990 left: %+v", d)
		}
		// It used 1500: 510 more than reserved, past empty.
		settle(t, b.lim, "k", tok, d.Reservation, 1500)
		d = allow(t, b.lim, "k", req, tok)
		debt := time.Duration(10+1500+1-1000) * 3600 * time.Millisecond
		if d.Allowed || d.Tokens.Remaining != 0 {
			t.Fatalf("in debt: %+v", d)
		}
		within(t, "RetryAfter", d.RetryAfter, debt-b.elapsed(t0), debt)
	})
}

// A request refused for tokens spends nothing: its request unit is given
// back, so a client retrying it is not counted twice. One larger than the
// whole budget never fits.
func TestReserveRefusalSpendsNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		req := Limit{Rate: 2, Period: time.Hour, Burst: 2}
		tok := Limit{Rate: 100, Period: time.Hour, Burst: 100}
		for i := range 5 {
			d := allow(t, b.lim, "k", req, tok)
			if !d.Allowed || d.Requests.Remaining != 1 {
				t.Fatalf("attempt %d: Allow = %+v, want admitted with 1 request left", i, d)
			}
			// RetryAfter is the time until the budget is full: now.
			d = reserve(t, b.lim, "k", req, tok, 150)
			if d.Allowed || d.Tokens.Limit != 100 || d.Tokens.Remaining != 100 || d.RetryAfter != 0 {
				t.Fatalf("attempt %d: Reserve(150) of 100 = %+v, want refused", i, d)
			}
		}
		if d := reserve(t, b.lim, "k", req, tok, 100); !d.Allowed {
			t.Fatalf("Reserve(100) of 100: %+v", d)
		}
	})
}

// Without a token limit, or with nothing to reserve, Reserve admits
// without a call, and Settle has nothing to do.
func TestReserveUnlimitedMakesNoCall(t *testing.T) {
	f := &fakeRedis{}
	lim := newLimiter(f, Options{FailMode: FailClosed})
	ctx := context.Background()
	for _, tc := range []struct {
		tok    Limit
		tokens int
	}{{Limit{}, 100}, {PerMinute(10), 0}} {
		d, err := lim.Reserve(ctx, "k", PerMinute(1), tc.tok, tc.tokens)
		if err != nil || !d.Allowed || d.Source != SourceNone || d.Reservation != (Reservation{}) {
			t.Errorf("Reserve(%+v, %d) = %+v, %v", tc.tok, tc.tokens, d, err)
		}
	}
	if err := lim.Settle(ctx, "k", Limit{}, Reservation{Tokens: 5, Source: SourceRedis}, 10); err != nil {
		t.Error(err)
	}
	if err := lim.Settle(ctx, "k", PerMinute(10), Reservation{Tokens: 5, Source: SourceRedis}, 5); err != nil {
		t.Error(err)
	}
	if f.calls != 0 {
		t.Errorf("%d calls to Redis, want none", f.calls)
	}
}
