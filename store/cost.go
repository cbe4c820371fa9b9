package store

import (
	"math"
	"math/bits"
)

// Prices are a model's prices per million tokens, as the catalog had them
// when a request was made: the snapshot its row keeps, so that a later
// price change never rewrites what a past request cost.
type Prices struct {
	Input, CachedInput, Output MicroUSD
}

// Cost is what a request with this usage costs at p, in micro-USD:
// cached (prompt tokens read from a provider's prompt cache) at the
// cached-input price, the rest of prompt at the input price, completion at
// the output price. The three products (tokens × micro-USD per million
// tokens) are summed exactly in 128 bits and divided by a million once,
// rounding UP: a request that used anything priced costs at least one
// micro-dollar, and the sum of costs never falls short of the provider's
// bill through rounding (at most one micro-dollar over per request).
// Negative counts are taken as 0, cached beyond prompt as prompt; a cost
// beyond int64 (impossible with the catalog's price cap and int32 token
// counts) saturates.
func (p Prices) Cost(prompt, cached, completion int) MicroUSD {
	prompt, cached, completion = max(prompt, 0), min(max(cached, 0), max(prompt, 0)), max(completion, 0)
	var hi, lo uint64
	add := func(tokens int, price MicroUSD) {
		if price <= 0 || tokens == 0 {
			return
		}
		h, l := bits.Mul64(uint64(tokens), uint64(price))
		var c uint64
		lo, c = bits.Add64(lo, l, 0)
		hi += h + c
	}
	add(prompt-cached, p.Input)
	add(cached, p.CachedInput)
	add(completion, p.Output)
	if hi >= 1_000_000 { // the quotient would not fit in 64 bits
		return math.MaxInt64
	}
	q, r := bits.Div64(hi, lo, 1_000_000)
	if r != 0 {
		q++
	}
	if q > math.MaxInt64 {
		return math.MaxInt64
	}
	return MicroUSD(q)
}
