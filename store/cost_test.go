package store

import (
	"math"
	"testing"
)

func TestPricesCost(t *testing.T) {
	gpt := Prices{Input: 150_000, CachedInput: 75_000, Output: 600_000} // $0.15, $0.075, $0.60 per million
	cases := []struct {
		name                       string
		p                          Prices
		prompt, cached, completion int
		want                       MicroUSD
	}{
		{"a million of each", gpt, 1_000_000, 0, 1_000_000, 750_000},
		{"cached at its price", gpt, 1_000_000, 1_000_000, 0, 75_000},
		{"exact", gpt, 100, 0, 50, 45},                                                // 15,000,000 + 30,000,000 = 45 micro-USD exactly
		{"rounds up", gpt, 1, 0, 0, 1},                                                // 0.15 micro-USD
		{"rounds the sum once", gpt, 3, 0, 1, 2},                                      // 0.45 + 0.6 = 1.05
		{"nothing used", gpt, 0, 0, 0, 0},                                             //
		{"free model", Prices{}, 1000, 0, 1000, 0},                                    //
		{"negative counts are none", gpt, -5, -1, -7, 0},                              //
		{"cached capped at prompt", gpt, 10, 20, 0, 1},                                // 10 cached: 0.75
		{"large", Prices{Output: MaxPrice}, 0, 0, math.MaxInt32, 214_748_364_700_000}, // $100k/M × 2^31-1 tokens
		{"saturates", Prices{Input: math.MaxInt64}, 0, 0, 0, 0},
	}
	for _, c := range cases {
		if got := c.p.Cost(c.prompt, c.cached, c.completion); got != c.want {
			t.Errorf("%s: Cost = %d, want %d", c.name, got, c.want)
		}
	}
	if got := (Prices{Input: math.MaxInt64, Output: math.MaxInt64}).Cost(math.MaxInt64, 0, math.MaxInt64); got != math.MaxInt64 {
		t.Errorf("overflow: Cost = %d, want MaxInt64", got)
	}
}
