package auth_test

import (
	"context"
	"encoding/base64"
	"errors"
	"hash/crc32"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/bulkheadhq/bulkhead/gateway/apikey"
	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// clock is a settable time source for expiry tests.
type clock struct{ off atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) advance(d time.Duration) { c.off.Add(int64(d)) }

type fixture struct {
	admin *store.Admin
	st    *store.Store
	rdb   redis.UniversalClient
}

func newFixture(t *testing.T) fixture {
	return fixture{admin: storetest.Admin(t), st: storetest.Open(t, store.Options{}), rdb: storetest.Redis(t)}
}

func (f fixture) org(t *testing.T) uuid.UUID {
	t.Helper()
	o, err := f.admin.CreateOrg(context.Background(), "auth test")
	if err != nil {
		t.Fatal(err)
	}
	return o.ID
}

// key creates a key for org and returns it in full.
func (f fixture) key(t *testing.T, org uuid.UUID, expires *time.Time) (string, store.Key) {
	t.Helper()
	k, err := apikey.Generate(org)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := f.admin.CreateKey(context.Background(), store.NewKey{
		OrgID: org, Hash: apikey.Hash([]byte(k)), DisplayPrefix: apikey.Display(k),
		Name: "test", RateLimitPerMinute: 60, TokensPerMinute: 1000, ExpiresAt: expires,
	})
	if err != nil {
		t.Fatal(err)
	}
	return k, rec
}

// instance is one gateway instance's authenticator, with its invalidation
// loop running when subscribe is true.
func (f fixture) instance(t *testing.T, subscribe bool, mod func(*auth.Options)) *auth.Authenticator {
	t.Helper()
	opts := auth.Options{Store: f.st, Redis: f.rdb}
	if mod != nil {
		mod(&opts)
	}
	a, err := auth.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if subscribe {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
		waitFor(t, time.Second, func() bool { return a.Stats().Purges > 0 })
	}
	return a
}

func waitFor(t *testing.T, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("condition not met within %s", limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

func authn(a *auth.Authenticator, key string) (*auth.Principal, error) {
	return a.Authenticate(context.Background(), []byte(key), netip.Addr{})
}

func TestAPIKeyResolvesToItsOrganization(t *testing.T) {
	f := newFixture(t)
	org := f.org(t)
	key, rec := f.key(t, org, nil)
	a := f.instance(t, false, nil)

	p, err := authn(a, key)
	if err != nil {
		t.Fatal(err)
	}
	if p.Org != org || p.KeyID != rec.ID || p.Kind != auth.KindAPIKey || p.RateLimitPerMinute != 60 || p.TokensPerMinute != 1000 {
		t.Errorf("principal = %+v", p)
	}
	before := a.Stats()
	cred := []byte(key)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := a.Authenticate(context.Background(), cred, netip.Addr{}); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("cached authentication allocates %.1f times", allocs)
	}
	if s := a.Stats(); s.L3Lookups != before.L3Lookups || s.L1Hits < before.L1Hits+100 {
		t.Errorf("cached look-ups reached the database: %+v -> %+v", before, s)
	}
}

// Every rejection is the same error, and malformed keys cost no I/O.
func TestRejectionsAreUniformAndCheap(t *testing.T) {
	f := newFixture(t)
	orgA, orgB := f.org(t), f.org(t)
	keyA, _ := f.key(t, orgA, nil)
	a := f.instance(t, false, nil)

	// A's secret under B's org segment, with a checksum that passes.
	swapped := withChecksum("sk_" + orgB.String() + "_" + keyA[40:83])
	randomOrg := withChecksum("sk_" + uuid.NewString() + "_" + keyA[40:83])
	unknown, _ := apikey.Generate(orgA)

	for name, cred := range map[string]string{"swapped org": swapped, "random org": randomOrg, "unknown key": unknown} {
		if _, err := authn(a, cred); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	before := a.Stats()
	for name, cred := range map[string]string{
		"bad checksum": keyA[:len(keyA)-1] + flip(keyA[len(keyA)-1]),
		"bad prefix":   "sk-proj-" + keyA[8:],
		"empty":        "",
		"truncated":    keyA[:50],
		"huge":         string(make([]byte, 1<<20)),
		"not a jwt":    "abc.def",
	} {
		if _, err := authn(a, cred); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	if s := a.Stats(); s.L2Hits+s.L2Errors+s.L3Lookups != before.L2Hits+before.L2Errors+before.L3Lookups {
		t.Errorf("malformed credentials caused look-ups: %+v -> %+v", before, s)
	}
}

func withChecksum(body string) string {
	c := crc32.ChecksumIEEE([]byte(body))
	return body + base64.RawURLEncoding.EncodeToString([]byte{byte(c >> 24), byte(c >> 16), byte(c >> 8), byte(c)})
}

func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

// The database itself refuses to resolve a key outside its organization.
func TestLookupIsConfinedByRLS(t *testing.T) {
	f := newFixture(t)
	orgA, orgB := f.org(t), f.org(t)
	keyA, _ := f.key(t, orgA, nil)
	_, err := f.st.LookupKey(context.Background(), orgB, apikey.Hash([]byte(keyA)))
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("A's hash looked up in B's context: err = %v, want ErrNotFound", err)
	}
	if _, err := f.st.LookupKey(context.Background(), orgA, apikey.Hash([]byte(keyA))); err != nil {
		t.Errorf("A's hash in A's context: %v", err)
	}
}

func TestRevocationReachesEveryInstanceWithinASecond(t *testing.T) {
	f := newFixture(t)
	org := f.org(t)
	key, rec := f.key(t, org, nil)
	one := f.instance(t, true, nil)
	two := f.instance(t, true, nil)
	for _, a := range []*auth.Authenticator{one, two} {
		if _, err := authn(a, key); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	if _, err := f.admin.RevokeKey(ctx, rec.ID); err != nil {
		t.Fatal(err)
	}
	if err := auth.Revoke(ctx, f.rdb, time.Hour, rec.Hash); err != nil {
		t.Fatal(err)
	}
	for i, a := range []*auth.Authenticator{one, two} {
		took := waitFor(t, time.Second, func() bool {
			_, err := authn(a, key)
			return errors.Is(err, auth.ErrUnauthenticated)
		})
		t.Logf("instance %d rejects the revoked key after %s", i+1, took)
	}
	// A fresh instance finds the tombstone in Redis.
	three := f.instance(t, false, nil)
	if _, err := authn(three, key); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("fresh instance: err = %v", err)
	}
}

// An instance that misses the event stops accepting the key once the L1
// TTL has passed.
func TestMissedRevocationBoundedByTTL(t *testing.T) {
	f := newFixture(t)
	org := f.org(t)
	key, rec := f.key(t, org, nil)
	const ttl = 300 * time.Millisecond
	deaf := f.instance(t, false, func(o *auth.Options) { o.CacheTTL = ttl })
	if _, err := authn(deaf, key); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := f.admin.RevokeKey(ctx, rec.ID); err != nil {
		t.Fatal(err)
	}
	if err := auth.Revoke(ctx, f.rdb, time.Hour, rec.Hash); err != nil {
		t.Fatal(err)
	}
	took := waitFor(t, 3*ttl, func() bool {
		_, err := authn(deaf, key)
		return errors.Is(err, auth.ErrUnauthenticated)
	})
	if took > ttl+200*time.Millisecond {
		t.Errorf("revoked key accepted for %s, TTL %s", took, ttl)
	}
	// Without Redis as well (no tombstone), PostgreSQL has the last word.
	key2, rec2 := f.key(t, org, nil)
	solo := f.instance(t, false, func(o *auth.Options) { o.CacheTTL = ttl; o.Redis = nil })
	if _, err := authn(solo, key2); err != nil {
		t.Fatalf("the second key before its revocation: %v", err)
	}
	if _, err := f.admin.RevokeKey(ctx, rec2.ID); err != nil {
		t.Fatal(err)
	}
	took = waitFor(t, 3*ttl, func() bool {
		_, err := authn(solo, key2)
		return errors.Is(err, auth.ErrUnauthenticated)
	})
	if took > ttl+200*time.Millisecond {
		t.Errorf("without Redis, revoked key accepted for %s, TTL %s", took, ttl)
	}
}

func TestRotationAndExpiry(t *testing.T) {
	f := newFixture(t)
	org := f.org(t)
	var clk clock
	a := f.instance(t, true, func(o *auth.Options) { o.Now = clk.now })
	ctx := context.Background()

	oldKey, oldRec := f.key(t, org, nil)
	if _, err := authn(a, oldKey); err != nil {
		t.Fatal(err)
	}
	newKey, err := apikey.Generate(org)
	if err != nil {
		t.Fatal(err)
	}
	old, created, err := f.admin.RotateKey(ctx, oldRec.ID, time.Hour, store.NewKey{Hash: apikey.Hash([]byte(newKey)), DisplayPrefix: apikey.Display(newKey)})
	if err != nil {
		t.Fatal(err)
	}
	if created.RateLimitPerMinute != oldRec.RateLimitPerMinute || created.Name != oldRec.Name || old.ExpiresAt == nil {
		t.Fatalf("rotation: old %+v new %+v", old, created)
	}
	if err := auth.Invalidate(ctx, f.rdb, old.Hash); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, func() bool { return a.Stats().Invalidated > 0 })
	if p, err := authn(a, newKey); err != nil || p.KeyID != created.ID {
		t.Fatalf("new key: %v, %v", p, err)
	}
	if _, err := authn(a, oldKey); err != nil {
		t.Fatalf("old key during the overlap: %v", err)
	}
	clk.advance(time.Hour + time.Second)
	if _, err := authn(a, oldKey); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("old key after the overlap: err = %v", err)
	}
	if _, err := authn(a, newKey); err != nil {
		t.Errorf("new key after the overlap: %v", err)
	}

	soon := clk.now().Add(time.Minute)
	expiring, _ := f.key(t, org, &soon)
	if _, err := authn(a, expiring); err != nil {
		t.Fatal(err)
	}
	clk.advance(2 * time.Minute)
	if _, err := authn(a, expiring); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("expired key: err = %v", err)
	}
}

func TestL2IsSharedBetweenInstances(t *testing.T) {
	f := newFixture(t)
	org := f.org(t)
	key, _ := f.key(t, org, nil)
	one, two := f.instance(t, false, nil), f.instance(t, false, nil)
	if _, err := authn(one, key); err != nil {
		t.Fatal(err)
	}
	if _, err := authn(two, key); err != nil {
		t.Fatal(err)
	}
	if s := two.Stats(); s.L2Hits != 1 || s.L3Lookups != 0 {
		t.Errorf("second instance: %+v, want one L2 hit and no database look-up", s)
	}
}

func TestRedisDownFallsBackToPostgres(t *testing.T) {
	f := newFixture(t)
	org := f.org(t)
	key, _ := f.key(t, org, nil)
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 50 * time.Millisecond})
	defer dead.Close()
	a := f.instance(t, false, func(o *auth.Options) { o.Redis = dead })
	start := time.Now()
	if _, err := authn(a, key); err != nil {
		t.Fatalf("with Redis down: %v", err)
	}
	if s := a.Stats(); s.L2Errors == 0 || s.L3Lookups != 1 {
		t.Errorf("stats %+v, want an L2 error and one database look-up", s)
	}
	t.Logf("first look-up with Redis down took %s", time.Since(start))
}

func TestPostgresDown(t *testing.T) {
	f := newFixture(t)
	org := f.org(t)
	key, _ := f.key(t, org, nil)
	st := storetest.Open(t, store.Options{})
	a := f.instance(t, false, func(o *auth.Options) { o.Store = st; o.Redis = nil })
	if _, err := authn(a, key); err != nil {
		t.Fatal(err)
	}
	st.Close() // PostgreSQL is gone for this instance
	if _, err := authn(a, key); err != nil {
		t.Errorf("cached key with PostgreSQL down: %v", err)
	}
	unknown, _ := apikey.Generate(org)
	if _, err := authn(a, unknown); !errors.Is(err, auth.ErrUnavailable) {
		t.Errorf("unknown key with PostgreSQL down: err = %v, want ErrUnavailable", err)
	}
}

// A flood of random well-formed keys reaches the database once per key,
// and repeated ones never again.
func TestNegativeCacheBoundsLookups(t *testing.T) {
	f := newFixture(t)
	org := f.org(t)
	a := f.instance(t, false, func(o *auth.Options) { o.NegativeSize = 1000 })
	keys := make([]string, 200)
	for i := range keys {
		keys[i], _ = apikey.Generate(org)
	}
	var wg sync.WaitGroup
	for round := 0; round < 2; round++ {
		for _, k := range keys {
			wg.Add(2)
			for range 2 { // concurrent duplicates share one look-up
				go func() {
					defer wg.Done()
					if _, err := authn(a, k); !errors.Is(err, auth.ErrUnauthenticated) {
						t.Errorf("random key: err = %v", err)
					}
				}()
			}
		}
		wg.Wait()
	}
	if s := a.Stats(); s.L3Lookups > uint64(len(keys)) {
		t.Errorf("%d database look-ups for %d distinct keys", s.L3Lookups, len(keys))
	}
}

// OrgChanged follows the organization invalidation events (a move's
// switches reach the store's cached placements through it): called with
// uuid.Nil on subscribing (caches purged) and with each invalidated
// organization.
func TestOrgChangedFollowsInvalidations(t *testing.T) {
	f := newFixture(t)
	org := uuid.New()
	var mu sync.Mutex
	var got []uuid.UUID
	f.instance(t, true, func(o *auth.Options) {
		o.OrgChanged = func(id uuid.UUID) {
			mu.Lock()
			got = append(got, id)
			mu.Unlock()
		}
	})
	if err := auth.InvalidateOrg(context.Background(), f.rdb, org); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(got, org)
	})
	mu.Lock()
	defer mu.Unlock()
	if len(got) == 0 || got[0] != uuid.Nil {
		t.Errorf("calls %v: want uuid.Nil (the purge on subscribing) first", got)
	}
}
