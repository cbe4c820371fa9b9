package ratelimit_test

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/bulkheadhq/bulkhead/ratelimit"
)

func ExampleLimiter_Allow() {
	// A nil client is single-instance mode; pass the shared Redis client
	// to enforce the budgets across replicas (and run lim.Run).
	lim := ratelimit.New(nil, ratelimit.Options{})
	ctx := context.Background()
	rpm, tpm := ratelimit.PerMinute(60), ratelimit.PerMinute(100_000)
	headers := map[string]string{}
	set := func(name, value string) { headers[name] = value }

	d, err := lim.Allow(ctx, "key-id-1", rpm, tpm)
	if err != nil {
		fmt.Println("503:", err) // FailClosed and Redis down
		return
	}
	d.Headers(set)
	if !d.Allowed {
		fmt.Println("429")
		return
	}
	// ... parse the body, then set its estimate aside: the prompt's
	// tokens plus max_tokens.
	r, err := lim.Reserve(ctx, "key-id-1", rpm, tpm, 1500)
	if err != nil {
		fmt.Println("503:", err)
		return
	}
	r.Headers(set)
	if !r.Allowed {
		fmt.Println("429")
		return
	}
	// ... proxy the request, then settle with what the provider reported.
	if err := lim.Settle(ctx, "key-id-1", tpm, r.Reservation, 1234); err != nil {
		fmt.Println("settle:", err)
	}
	for _, name := range slices.Sorted(maps.Keys(headers)) {
		fmt.Printf("%s: %s\n", name, headers[name])
	}
	// Output:
	// x-ratelimit-limit-requests: 60
	// x-ratelimit-limit-tokens: 100000
	// x-ratelimit-remaining-requests: 59
	// x-ratelimit-remaining-tokens: 98500
	// x-ratelimit-reset-requests: 1s
	// x-ratelimit-reset-tokens: 900ms
}
