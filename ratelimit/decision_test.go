package ratelimit

import (
	"slices"
	"testing"
	"time"
)

func TestLimit(t *testing.T) {
	if got, want := PerMinute(60), (Limit{Rate: 60, Period: time.Minute, Burst: 60}); got != want {
		t.Errorf("PerMinute(60) = %+v, want %+v", got, want)
	}
	for _, tc := range []struct {
		name  string
		l     Limit
		zero  bool
		burst int
	}{
		{"zero value", Limit{}, true, 0},
		{"no rate", Limit{Period: time.Minute, Burst: 5}, true, 5},
		{"negative rate", Limit{Rate: -1, Period: time.Minute}, true, -1},
		{"no period", Limit{Rate: 5, Burst: 5}, true, 5},
		{"per minute", PerMinute(1), false, 1},
		{"burst defaults to rate", Limit{Rate: 7, Period: time.Hour}, false, 7},
		{"burst above rate", Limit{Rate: 7, Period: time.Hour, Burst: 20}, false, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.l.IsZero(); got != tc.zero {
				t.Errorf("IsZero() = %v, want %v", got, tc.zero)
			}
			if got := tc.l.burst(); got != tc.burst {
				t.Errorf("burst() = %d, want %d", got, tc.burst)
			}
		})
	}
}

func TestFormatReset(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{-time.Second, "0s"},
		{time.Nanosecond, "1ms"},
		{999 * time.Microsecond, "1ms"},
		{19200 * time.Microsecond, "20ms"},
		{20 * time.Millisecond, "20ms"},
		{time.Second, "1s"},
		{1500 * time.Millisecond, "1.5s"},
		{17498100 * time.Microsecond, "17.499s"},
		{6 * time.Minute, "6m0s"},
		{86*time.Second + 400*time.Millisecond, "1m26.4s"},
		{24 * time.Hour, "24h0m0s"},
	} {
		if got := FormatReset(tc.d); got != tc.want {
			t.Errorf("FormatReset(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want int64
	}{
		{0, 1},
		{time.Millisecond, 1},
		{time.Second, 1},
		{time.Second + time.Nanosecond, 2},
		{1200 * time.Millisecond, 2},
		{59 * time.Second, 59},
		{6 * time.Minute, 360},
	} {
		if got := RetryAfterSeconds(tc.d); got != tc.want {
			t.Errorf("RetryAfterSeconds(%v) = %d, want %d", tc.d, got, tc.want)
		}
	}
}

func TestHeaders(t *testing.T) {
	type header struct{ name, value string }
	for _, tc := range []struct {
		name string
		d    Decision
		want []header
	}{
		{
			name: "no limit",
			d:    Decision{Allowed: true, Source: SourceNone},
			want: nil,
		},
		{
			name: "requests only",
			d: Decision{Allowed: true, Source: SourceRedis,
				Requests: Window{Limit: 60, Remaining: 59, Reset: time.Second}},
			want: []header{
				{"x-ratelimit-limit-requests", "60"},
				{"x-ratelimit-remaining-requests", "59"},
				{"x-ratelimit-reset-requests", "1s"},
			},
		},
		{
			name: "requests and tokens",
			d: Decision{Allowed: true, Source: SourceRedis,
				Requests: Window{Limit: 5000, Remaining: 4999, Reset: 12 * time.Millisecond},
				Tokens:   Window{Limit: 160000, Remaining: 159976, Reset: 8100 * time.Microsecond}},
			want: []header{
				{"x-ratelimit-limit-requests", "5000"},
				{"x-ratelimit-remaining-requests", "4999"},
				{"x-ratelimit-reset-requests", "12ms"},
				{"x-ratelimit-limit-tokens", "160000"},
				{"x-ratelimit-remaining-tokens", "159976"},
				{"x-ratelimit-reset-tokens", "9ms"},
			},
		},
		{
			name: "tokens only, rejected",
			d: Decision{Source: SourceLocal, RetryAfter: 1200 * time.Millisecond,
				Tokens: Window{Limit: 1000, Remaining: 0, Reset: 6 * time.Minute}},
			want: []header{
				{"x-ratelimit-limit-tokens", "1000"},
				{"x-ratelimit-remaining-tokens", "0"},
				{"x-ratelimit-reset-tokens", "6m0s"},
				{"Retry-After", "2"},
			},
		},
		{
			name: "rejected, retry in under a second",
			d: Decision{Source: SourceRedis, RetryAfter: 10 * time.Millisecond,
				Requests: Window{Limit: 60, Remaining: 0, Reset: 1500 * time.Millisecond}},
			want: []header{
				{"x-ratelimit-limit-requests", "60"},
				{"x-ratelimit-remaining-requests", "0"},
				{"x-ratelimit-reset-requests", "1.5s"},
				{"Retry-After", "1"},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []header
			tc.d.Headers(func(name, value string) { got = append(got, header{name, value}) })
			if !slices.Equal(got, tc.want) {
				t.Errorf("headers:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// appendReset formats as FormatReset does, its allocation-free branch
// (under a second) included, edges and all.
func TestAppendReset(t *testing.T) {
	ds := []time.Duration{-time.Second, 0, 1, time.Microsecond, time.Millisecond - 1, time.Millisecond, time.Millisecond + 1,
		20 * time.Millisecond, 999 * time.Millisecond, 999*time.Millisecond + 1, time.Second - 1, time.Second, 1500 * time.Millisecond, 6 * time.Minute}
	for d := time.Duration(1); d < 2*time.Second; d = d*3 + 7 {
		ds = append(ds, d)
	}
	for _, d := range ds {
		if got, want := string(appendReset([]byte("x"), d)), "x"+FormatReset(d); got != want {
			t.Errorf("appendReset(%v) = %q, want %q", d, got, want)
		}
	}
}
