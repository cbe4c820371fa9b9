package ratelimit

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bulkheadhq/bulkhead/store/storetest"
)

func allow(t *testing.T, lim *Limiter, key string, req, tok Limit) Decision {
	t.Helper()
	d, err := lim.Allow(context.Background(), key, req, tok)
	if err != nil {
		t.Fatalf("Allow(%q): %v", key, err)
	}
	return d
}

func charge(t *testing.T, lim *Limiter, key string, tok Limit, tokens int) {
	t.Helper()
	if err := lim.Charge(context.Background(), key, tok, tokens); err != nil {
		t.Fatalf("Charge(%q, %d): %v", key, tokens, err)
	}
}

func TestAllowsExactlyBurstThenRejects(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, tc := range []struct {
			name  string
			limit Limit
		}{
			{"1 per minute", PerMinute(1)},
			{"5 per minute", PerMinute(5)},
			{"burst below rate", Limit{Rate: 10, Period: time.Hour, Burst: 3}},
			{"burst defaults to rate", Limit{Rate: 7, Period: time.Hour}},
			{"interval not a whole microsecond", Limit{Rate: 3, Period: 7 * time.Second, Burst: 3}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				key := tc.name // each case its own budget
				t0 := b.now()
				burst := tc.limit.burst()
				interval := tc.limit.Period / time.Duration(tc.limit.Rate)
				for i := range burst {
					d := allow(t, b.lim, key, tc.limit, Limit{})
					if !d.Allowed || d.Source != b.source {
						t.Fatalf("request %d: Allowed=%v Source=%q, want admitted by %q", i+1, d.Allowed, d.Source, b.source)
					}
					if d.Requests.Limit != burst || d.Requests.Remaining != burst-1-i {
						t.Errorf("request %d: Requests = %+v, want Limit %d Remaining %d", i+1, d.Requests, burst, burst-1-i)
					}
					within(t, "Reset", d.Requests.Reset, time.Duration(i+1)*interval-b.elapsed(t0), time.Duration(i+1)*interval+time.Microsecond)
					if d.Tokens != (Window{}) || d.RetryAfter != 0 {
						t.Errorf("request %d: Tokens = %+v, RetryAfter = %v; want zero", i+1, d.Tokens, d.RetryAfter)
					}
				}
				for i := range 3 {
					d := allow(t, b.lim, key, tc.limit, Limit{})
					if d.Allowed {
						t.Fatalf("request %d of a burst of %d was admitted", burst+1+i, burst)
					}
					if d.Requests.Remaining != 0 {
						t.Errorf("rejected: Remaining = %d, want 0", d.Requests.Remaining)
					}
					within(t, "RetryAfter", d.RetryAfter, interval-b.elapsed(t0), interval+time.Microsecond)
				}
				// Another key has its own budget.
				if d := allow(t, b.lim, key+"/other", tc.limit, Limit{}); !d.Allowed {
					t.Error("another key was rejected")
				}
			})
		}
	})
}

func TestRefillsAtRatePerPeriod(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		// One unit every 250ms, two at once.
		limit := Limit{Rate: 4, Period: time.Second, Burst: 2}
		const interval = 250 * time.Millisecond
		admitted := func(n int) int {
			got := 0
			for range n {
				if allow(t, b.lim, "k", limit, Limit{}).Allowed {
					got++
				}
			}
			return got
		}

		t0 := b.now()
		got := admitted(3)
		if b.late(t, t0, interval) {
			return
		}
		if got != 2 {
			t.Fatalf("full budget: admitted %d of 3, want 2", got)
		}
		d := allow(t, b.lim, "k", limit, Limit{})
		within(t, "Reset when empty", d.Requests.Reset, 2*interval-b.elapsed(t0), 2*interval)
		within(t, "RetryAfter when empty", d.RetryAfter, interval-b.elapsed(t0), interval)

		// Rejected requests consume nothing: after hammering the empty
		// budget, one interval and a half still buys exactly one request.
		got = admitted(20)
		if b.late(t, t0, interval) {
			return
		}
		if got != 0 {
			t.Fatalf("empty budget: admitted %d", got)
		}
		b.wait(interval * 3 / 2)
		got = admitted(3)
		if b.late(t, t0, 2*interval) {
			return
		}
		if got != 1 {
			t.Fatalf("after 1.5 intervals: admitted %d, want 1", got)
		}

		// A full period refills the whole burst, never more.
		b.wait(time.Second)
		t1 := b.now()
		got = admitted(5)
		if b.late(t, t1, interval) {
			return
		}
		if got != 2 {
			t.Fatalf("after a period: admitted %d, want 2 (the burst)", got)
		}
	})
}

func TestTokenBudget(t *testing.T) {
	t.Run("admission checks tokens without spending them", func(t *testing.T) {
		forEachBackend(t, func(t *testing.T, b backend) {
			tok := Limit{Rate: 10, Period: time.Hour, Burst: 10}
			for i := range 20 {
				d := allow(t, b.lim, "k", Limit{}, tok)
				if !d.Allowed {
					t.Fatalf("request %d rejected", i+1)
				}
				if want := (Window{Limit: 10, Remaining: 10}); d.Tokens != want || d.Requests != (Window{}) {
					t.Fatalf("request %d: Tokens %+v Requests %+v, want %+v and none", i+1, d.Tokens, d.Requests, want)
				}
			}
		})
	})

	t.Run("charges exhaust the budget", func(t *testing.T) {
		forEachBackend(t, func(t *testing.T, b backend) {
			req := Limit{Rate: 100, Period: time.Hour}
			tok := Limit{Rate: 1000, Period: time.Hour, Burst: 1000} // a token every 3.6s
			t0 := b.now()
			n := 0
			for ; n < 20; n++ {
				d := allow(t, b.lim, "k", req, tok)
				if !d.Allowed {
					if d.Tokens.Remaining != 0 {
						t.Errorf("rejected: Tokens.Remaining = %d, want 0", d.Tokens.Remaining)
					}
					// Rejected for tokens: the request unit was not spent.
					if d.Requests.Remaining != 100-n {
						t.Errorf("rejected: Requests.Remaining = %d, want %d", d.Requests.Remaining, 100-n)
					}
					within(t, "RetryAfter", d.RetryAfter, 3600*time.Millisecond-b.elapsed(t0), 3600*time.Millisecond)
					within(t, "Tokens.Reset", d.Tokens.Reset, time.Hour-b.elapsed(t0), time.Hour)
					break
				}
				if want := 1000 - 100*n; d.Tokens.Remaining != want {
					t.Errorf("request %d: Tokens.Remaining = %d, want %d", n+1, d.Tokens.Remaining, want)
				}
				charge(t, b.lim, "k", tok, 100)
			}
			if n != 10 {
				t.Fatalf("admitted %d requests of 100 tokens on a budget of 1000, want 10", n)
			}
		})
	})

	t.Run("debt is repaid before the next admission", func(t *testing.T) {
		forEachBackend(t, func(t *testing.T, b backend) {
			tok := Limit{Rate: 100, Period: time.Second, Burst: 10} // a token every 10ms
			t0 := b.now()
			charge(t, b.lim, "k", tok, 30) // 20 past the burst
			d := allow(t, b.lim, "k", Limit{}, tok)
			if d.Allowed {
				t.Fatal("admitted while 20 tokens in debt")
			}
			if d.Tokens.Remaining != 0 {
				t.Errorf("Tokens.Remaining = %d, want 0", d.Tokens.Remaining)
			}
			// Admission needs the level back to burst-1 = 9: 21 tokens.
			within(t, "RetryAfter", d.RetryAfter, 210*time.Millisecond-b.elapsed(t0), 210*time.Millisecond)
			within(t, "Tokens.Reset", d.Tokens.Reset, 300*time.Millisecond-b.elapsed(t0), 300*time.Millisecond)

			b.wait(150 * time.Millisecond)
			d = allow(t, b.lim, "k", Limit{}, tok)
			if b.late(t, t0, 210*time.Millisecond) {
				return
			}
			if d.Allowed {
				t.Fatal("admitted before the debt was repaid")
			}
			b.wait(100 * time.Millisecond)
			if d := allow(t, b.lim, "k", Limit{}, tok); !d.Allowed {
				t.Fatalf("still rejected after the debt was repaid: %+v", d)
			}
		})
	})

	t.Run("no limit or no tokens charges nothing", func(t *testing.T) {
		forEachBackend(t, func(t *testing.T, b backend) {
			tok := Limit{Rate: 10, Period: time.Hour, Burst: 10}
			charge(t, b.lim, "k", Limit{}, 100)
			charge(t, b.lim, "k", tok, 0)
			charge(t, b.lim, "k", tok, -5)
			if d := allow(t, b.lim, "k", Limit{}, tok); d.Tokens.Remaining != 10 {
				t.Errorf("Tokens.Remaining = %d, want 10", d.Tokens.Remaining)
			}
		})
	})

	t.Run("rejected for requests reports the tokens", func(t *testing.T) {
		forEachBackend(t, func(t *testing.T, b backend) {
			req := Limit{Rate: 1, Period: time.Hour, Burst: 1}
			tok := Limit{Rate: 60, Period: time.Hour, Burst: 60}
			t0 := b.now()
			allow(t, b.lim, "k", req, tok)
			charge(t, b.lim, "k", tok, 30)
			d := allow(t, b.lim, "k", req, tok)
			if d.Allowed {
				t.Fatal("admitted past the request budget")
			}
			if d.Tokens.Limit != 60 || d.Tokens.Remaining != 30 {
				t.Errorf("Tokens = %+v, want Limit 60 Remaining 30", d.Tokens)
			}
			within(t, "RetryAfter", d.RetryAfter, time.Hour-b.elapsed(t0), time.Hour)
		})
	})
}

func TestNoLimitsMakesNoCall(t *testing.T) {
	lim := newLimiter(&fakeRedis{err: errors.New("must not be called")}, Options{FailMode: FailClosed})
	d, err := lim.Allow(context.Background(), "k", Limit{}, Limit{})
	if err != nil || !d.Allowed || d.Source != SourceNone {
		t.Fatalf("Allow without limits = %+v, %v; want admitted by %q", d, err, SourceNone)
	}
	if s := lim.Stats(); s != (Stats{Replicas: 1}) {
		t.Errorf("Stats = %+v, want zero counters", s)
	}
}

func TestDecisionHeadersFromAllow(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		got := map[string]string{}
		d := allow(t, b.lim, "k", PerMinute(60), PerMinute(1000))
		d.Headers(func(name, value string) { got[name] = value })
		want := map[string]string{
			"x-ratelimit-limit-requests":     "60",
			"x-ratelimit-remaining-requests": "59",
			"x-ratelimit-reset-requests":     "1s",
			"x-ratelimit-limit-tokens":       "1000",
			"x-ratelimit-remaining-tokens":   "1000",
			"x-ratelimit-reset-tokens":       "0s",
		}
		if len(got) != len(want) {
			t.Errorf("headers = %v, want %v", got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s = %q, want %q", k, got[k], v)
			}
		}
	})
}

func TestRedisKeysHaveHashTagAndExpire(t *testing.T) {
	rdb := storetest.Redis(t)
	prefix := testPrefix(t, rdb)
	lim := New(rdb, Options{Prefix: prefix})
	ctx := context.Background()
	tok := PerMinute(1000)
	allow(t, lim, "key-1", PerMinute(60), tok)
	charge(t, lim, "key-1", tok, 500)

	for _, tc := range []struct {
		key      string
		min, max time.Duration
	}{
		{prefix + ":{key-1}:r", 900 * time.Millisecond, time.Second}, // 1 request at 1/s
		{prefix + ":{key-1}:t", 29 * time.Second, 30 * time.Second},  // 500 tokens at 1000/min
	} {
		ttl, err := rdb.PTTL(ctx, tc.key).Result()
		if err != nil {
			t.Fatalf("PTTL %s: %v", tc.key, err)
		}
		within(t, "PTTL "+tc.key, ttl, tc.min, tc.max)
	}
}

func TestCanceledContext(t *testing.T) {
	rdb := storetest.Redis(t)
	lim := New(rdb, Options{Prefix: testPrefix(t, rdb), FailMode: FailClosed})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := lim.Allow(ctx, "k", PerMinute(1), Limit{}); !errors.Is(err, context.Canceled) || errors.Is(err, ErrUnavailable) {
		t.Errorf("Allow with a canceled context: %v, want context.Canceled", err)
	}
	if err := lim.Charge(ctx, "k", PerMinute(1), 1); !errors.Is(err, context.Canceled) {
		t.Errorf("Charge with a canceled context: %v, want context.Canceled", err)
	}
	if s := lim.Stats(); s.RedisErrors != 0 || s.Fallbacks != 0 {
		t.Errorf("a caller's cancellation counted against Redis: %+v", s)
	}
	if d := allow(t, lim, "k", PerMinute(1), Limit{}); !d.Allowed || d.Source != SourceRedis {
		t.Errorf("after a canceled call: %+v, want admitted by Redis", d)
	}
}

// fakeRedis answers every script with a fixed reply or error.
type fakeRedis struct {
	reply any
	err   error
	calls int
}

func (f *fakeRedis) result(ctx context.Context) *redis.Cmd {
	f.calls++
	return redis.NewCmdResult(f.reply, f.err)
}

func (f *fakeRedis) Eval(ctx context.Context, _ string, _ []string, _ ...any) *redis.Cmd {
	return f.result(ctx)
}

func (f *fakeRedis) EvalSha(ctx context.Context, _ string, _ []string, _ ...any) *redis.Cmd {
	return f.result(ctx)
}

func (f *fakeRedis) EvalRO(ctx context.Context, _ string, _ []string, _ ...any) *redis.Cmd {
	return f.result(ctx)
}

func (f *fakeRedis) EvalShaRO(ctx context.Context, _ string, _ []string, _ ...any) *redis.Cmd {
	return f.result(ctx)
}

func (f *fakeRedis) ScriptExists(context.Context, ...string) *redis.BoolSliceCmd {
	return redis.NewBoolSliceResult([]bool{true}, nil)
}

func (f *fakeRedis) ScriptLoad(context.Context, string) *redis.StringCmd {
	return redis.NewStringResult("", nil)
}

var _ rediser = (*fakeRedis)(nil)

func TestUnexpectedRepliesAreErrorsNotPanics(t *testing.T) {
	good := []any{int64(1), int64(4), int64(1000), int64(0), int64(0), int64(0)}
	for _, tc := range []struct {
		name   string
		reply  any
		err    error
		charge bool
		want   string
	}{
		{name: "nil", reply: nil, want: "reply is <nil>, want an array"},
		{name: "string", reply: "OK", want: "reply is string, want an array"},
		{name: "short array", reply: good[:5], want: "reply has 5 elements, want 6"},
		{name: "string element", reply: append(append([]any{}, good[:5]...), "7"), want: "reply element 5 is string"},
		{name: "redis error", err: redis.Nil, want: "evaluating script: redis: nil"},
		{name: "charge array", reply: good, charge: true, want: "reply is []interface {}, want an integer"},
		{name: "charge float", reply: 1.5, charge: true, want: "reply is float64, want an integer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, mode := range []FailMode{FailClosed, FailLocal} {
				f := &fakeRedis{reply: tc.reply, err: tc.err}
				lim := newLimiter(f, Options{FailMode: mode})
				var err error
				var d Decision
				if tc.charge {
					err = lim.Charge(context.Background(), "k", PerMinute(10), 1)
				} else {
					d, err = lim.Allow(context.Background(), "k", PerMinute(10), PerMinute(10))
				}
				switch mode {
				case FailClosed:
					if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), tc.want) {
						t.Errorf("FailClosed: error %v, want ErrUnavailable containing %q", err, tc.want)
					}
					if d.Allowed {
						t.Error("FailClosed: admitted with an error")
					}
				case FailLocal:
					if err != nil {
						t.Errorf("FailLocal: error %v", err)
					}
					if !tc.charge && (!d.Allowed || d.Source != SourceLocal) {
						t.Errorf("FailLocal: %+v, want admitted by the local limiter", d)
					}
				}
				if s := lim.Stats(); s.RedisErrors != 1 || s.Fallbacks != 1 {
					t.Errorf("%v: Stats = %+v, want 1 Redis error and 1 fallback", mode, s)
				}
			}
		})
	}
}

func TestGoodReplyFromFake(t *testing.T) {
	f := &fakeRedis{reply: []any{int64(0), int64(0), int64(2_500_000), int64(7), int64(1_000), int64(1_250_000)}}
	lim := newLimiter(f, Options{})
	d := allow(t, lim, "k", Limit{Rate: 2, Period: 2 * time.Second, Burst: 3}, PerMinute(10))
	want := Decision{
		Allowed:    false,
		Requests:   Window{Limit: 3, Remaining: 0, Reset: 2500 * time.Millisecond},
		Tokens:     Window{Limit: 10, Remaining: 7, Reset: time.Millisecond},
		RetryAfter: 1250 * time.Millisecond,
		Source:     SourceRedis,
	}
	if d != want {
		t.Errorf("decision\n got %+v\nwant %+v", d, want)
	}
}

// A usage figure too large for any budget must not make Redis fail (and so
// open the breaker): the key just stays in debt.
func TestHugeChargeIsDebtNotError(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		tok := PerMinute(1000)
		charge(t, b.lim, "k", tok, math.MaxInt)
		d := allow(t, b.lim, "k", Limit{}, tok)
		if d.Allowed || d.Source != b.source || d.RetryAfter < 100*365*24*time.Hour {
			t.Errorf("after a huge charge: %+v, want rejected for a very long time", d)
		}
		if s := b.lim.Stats(); s.RedisErrors != 0 {
			t.Errorf("Stats = %+v, want no Redis error", s)
		}
	})
}
