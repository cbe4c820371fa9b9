package auth_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/gateway/apikey"
	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/ratelimit"
	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// BenchmarkAuthenticate measures the paths of an API key: an L1 hit (the
// steady state; target under 1 µs and no allocation), an L2 (Redis) hit,
// a negative-cache hit for an unknown key, and a new guess with and
// without a spent failure budget.
func BenchmarkAuthenticate(b *testing.B) {
	admin, st, rdb := storetest.Admin(b), storetest.Open(b, store.Options{}), storetest.Redis(b)
	ctx := context.Background()
	org, err := admin.CreateOrg(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	key, _ := apikey.Generate(org.ID)
	hash := apikey.Hash([]byte(key))
	if _, err := admin.CreateKey(ctx, store.NewKey{OrgID: org.ID, Hash: hash, DisplayPrefix: apikey.Display(key), Name: "b", RateLimitPerMinute: 1}); err != nil {
		b.Fatal(err)
	}
	a, err := auth.New(auth.Options{Store: st, Redis: rdb})
	if err != nil {
		b.Fatal(err)
	}
	cred := []byte(key)
	if _, err := a.Authenticate(ctx, cred, netip.Addr{}); err != nil {
		b.Fatal(err)
	}

	b.Run("L1 hit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := a.Authenticate(ctx, cred, netip.Addr{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("L2 redis hit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			a.ForgetForTest(hash)
			if _, err := a.Authenticate(ctx, cred, netip.Addr{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	unknown, _ := apikey.Generate(uuid.New())
	bad := []byte(unknown)
	a.Authenticate(ctx, bad, netip.Addr{}) //nolint:errcheck // fills the negative cache
	b.Run("negative hit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := a.Authenticate(ctx, bad, netip.Addr{}); err == nil {
				b.Fatal("accepted")
			}
		}
	})
	// A guess from an address whose failure budget is spent: the L1
	// miss, the Redis (L2) miss, and the refusal from the remembered
	// spent budget; compare with "L3 guess", what each guess cost
	// before budgets.
	guess := func() []byte {
		k, _ := apikey.Generate(org.ID)
		return []byte(k)
	}
	thr, err := auth.New(auth.Options{Store: st, Redis: rdb, FailuresPerMinutePerAddress: 1,
		Failures: ratelimit.New(rdb, ratelimit.Options{Prefix: "bulkhead:authfail:bench:" + uuid.NewString()})})
	if err != nil {
		b.Fatal(err)
	}
	client := netip.MustParseAddr("198.51.100.1")
	thr.Authenticate(ctx, guess(), client) //nolint:errcheck // spends the budget
	b.Run("throttled guess", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := thr.Authenticate(ctx, guess(), client); !errors.Is(err, auth.ErrThrottled) {
				b.Fatal(err)
			}
		}
	})
	b.Run("L3 guess", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := a.Authenticate(ctx, guess(), netip.Addr{}); !errors.Is(err, auth.ErrUnauthenticated) {
				b.Fatal(err)
			}
		}
	})
	b.Run("malformed", func(b *testing.B) {
		garbage := []byte(key[:len(key)-1] + "!")
		b.ReportAllocs()
		for b.Loop() {
			if _, err := a.Authenticate(ctx, garbage, netip.Addr{}); err == nil {
				b.Fatal("accepted")
			}
		}
	})
}
