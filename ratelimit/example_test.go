package ratelimit_test

import (
	"context"
	"fmt"

	"github.com/bulkheadhq/bulkhead/ratelimit"
)

func ExampleLimiter_Allow() {
	// A nil client is single-instance mode; pass the shared Redis client
	// to enforce the budgets across replicas.
	lim := ratelimit.New(nil, ratelimit.Options{})
	ctx := context.Background()
	rpm, tpm := ratelimit.PerMinute(60), ratelimit.PerMinute(100_000)

	d, err := lim.Allow(ctx, "key-id-1", rpm, tpm)
	if err != nil {
		fmt.Println("503:", err) // FailClosed and Redis down
		return
	}
	d.Headers(func(name, value string) { fmt.Printf("%s: %s\n", name, value) })
	if !d.Allowed {
		fmt.Println("429")
		return
	}
	// ... proxy the request, then charge what the provider reported.
	if err := lim.Charge(ctx, "key-id-1", tpm, 1234); err != nil {
		fmt.Println("charge:", err)
	}
	// Output:
	// x-ratelimit-limit-requests: 60
	// x-ratelimit-remaining-requests: 59
	// x-ratelimit-reset-requests: 1s
	// x-ratelimit-limit-tokens: 100000
	// x-ratelimit-remaining-tokens: 100000
	// x-ratelimit-reset-tokens: 0s
}
