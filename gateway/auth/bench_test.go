package auth_test

import (
	"context"
	"net/netip"
	"testing"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/gateway/apikey"
	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// BenchmarkAuthenticate measures the three paths of an API key: an L1 hit
// (the steady state; target under 1 µs and no allocation), an L2 (Redis)
// hit, and a negative-cache hit for an unknown key.
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
