package auth_test

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/bulkheadhq/bulkhead/gateway/apikey"
	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/ratelimit"
)

// throttled is an instance whose failed look-ups are limited to perAddr
// per client address and perOrg per organization (0: none), with budgets
// in rdb under a prefix of this test's own.
func (f fixture) throttled(t *testing.T, rdb redis.UniversalClient, perAddr, perOrg int) *auth.Authenticator {
	t.Helper()
	lim := ratelimit.New(rdb, ratelimit.Options{Prefix: "bulkhead:authfail:test:" + uuid.NewString(), Timeout: time.Second})
	return f.instance(t, false, func(o *auth.Options) {
		o.Redis = rdb
		o.Failures, o.FailuresPerMinutePerAddress, o.FailuresPerMinutePerOrg = lim, perAddr, perOrg
	})
}

func authnFrom(a *auth.Authenticator, key string, client netip.Addr) (*auth.Principal, error) {
	return a.Authenticate(context.Background(), []byte(key), client)
}

// guessed returns n well-formed keys for org that no one created.
func guessed(t *testing.T, org uuid.UUID, n int) []string {
	t.Helper()
	keys := make([]string, n)
	for i := range keys {
		var err error
		if keys[i], err = apikey.Generate(org); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// refilled bounds the units a budget of perMinute regained since start.
func refilled(start time.Time, perMinute int) int {
	return 1 + int(time.Since(start)/(time.Minute/time.Duration(perMinute)))
}

// wantThrottled fails unless err is a throttle of scope with a wait.
func wantThrottled(t *testing.T, err error, scope string) {
	t.Helper()
	var te *auth.ThrottledError
	if !errors.As(err, &te) || !errors.Is(err, auth.ErrThrottled) || te.Scope != scope || te.RetryAfter <= 0 {
		t.Fatalf("err = %v, want a throttle per %s with a Retry-After", err, scope)
	}
}

// 2,000 unique well-formed keys for a real organization from one address
// (4 concurrent callers, as the outside test did) cost PostgreSQL at most
// the address's budget plus the look-ups in flight; the rest are refused
// before any database work. The organization's valid cached key keeps
// working throughout, and another address still gets its own budget.
func TestFailedLookupsThrottledPerAddress(t *testing.T) {
	f := newFixture(t)
	org := f.org(t)
	valid, _ := f.key(t, org, nil)
	const budget, workers = 50, 4
	a := f.throttled(t, f.rdb, budget, 0)
	attacker := netip.MustParseAddr("198.51.100.7")
	if _, err := authnFrom(a, valid, attacker); err != nil {
		t.Fatal(err)
	}
	keys := guessed(t, org, 2000)
	before, start := a.Stats(), time.Now()
	var refused, throttled, validOK atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(keys); i += workers {
				_, err := authnFrom(a, keys[i], attacker)
				switch {
				case errors.Is(err, auth.ErrUnauthenticated):
					refused.Add(1)
				case errors.Is(err, auth.ErrThrottled):
					throttled.Add(1)
				default:
					t.Errorf("guessed key: err = %v", err)
				}
				if i%100 == w { // the tenant's own key, from the same address, mid-flood
					if _, err := authnFrom(a, valid, attacker); err != nil {
						t.Errorf("valid cached key during the flood: %v", err)
					} else {
						validOK.Add(1)
					}
				}
			}
		}()
	}
	wg.Wait()

	s := a.Stats()
	lookups := s.L3Lookups - before.L3Lookups
	// The budget, the look-ups in flight when it ran out, and its refill
	// (50 a minute) while the flood lasted.
	bound := uint64(budget + workers + refilled(start, budget))
	if lookups > bound {
		t.Errorf("%d of 2000 guessed keys reached PostgreSQL, want at most %d", lookups, bound)
	}
	if refused.Load() != int64(lookups) || refused.Load()+throttled.Load() != 2000 {
		t.Errorf("%d refused after a look-up, %d throttled, %d look-ups", refused.Load(), throttled.Load(), lookups)
	}
	if s.ThrottledAddress-before.ThrottledAddress != uint64(throttled.Load()) || s.Failures-before.Failures != lookups {
		t.Errorf("stats %+v: throttled and failure counters disagree with what callers saw", s)
	}
	if validOK.Load() != 80 {
		t.Errorf("valid key succeeded %d times, want 80", validOK.Load())
	}
	_, err := authnFrom(a, guessed(t, org, 1)[0], attacker)
	wantThrottled(t, err, auth.ScopeAddress)

	// Another address is not charged for the attacker's failures.
	other := netip.MustParseAddr("203.0.113.9")
	if _, err := authnFrom(a, guessed(t, org, 1)[0], other); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("another address: err = %v, want a look-up and 401", err)
	}
}

// IPv6 clients are counted per /64: cycling through one's own prefix
// does not buy more look-ups; a neighbouring /64 has its own budget.
func TestFailureBudgetPerIPv6Prefix(t *testing.T) {
	f := newFixture(t)
	org := f.org(t)
	a := f.throttled(t, f.rdb, 3, 0)
	keys := guessed(t, org, 6)
	for i, k := range keys[:3] {
		c := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i + 1)}) // 2001:db8::1, ::2, ::3
		if _, err := authnFrom(a, k, c); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("failure %d: err = %v", i, err)
		}
	}
	_, err := authnFrom(a, keys[3], netip.MustParseAddr("2001:db8::ffff:1"))
	wantThrottled(t, err, auth.ScopeAddress)
	if _, err := authnFrom(a, keys[4], netip.MustParseAddr("2001:db8:0:1::1")); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("another /64: err = %v, want a look-up", err)
	}
	// An IPv4 client seen as an IPv4-mapped IPv6 address is the same client.
	b := f.throttled(t, f.rdb, 1, 0)
	if _, err := authnFrom(b, keys[5], netip.MustParseAddr("192.0.2.1")); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatal(err)
	}
	_, err = authnFrom(b, guessed(t, org, 1)[0], netip.MustParseAddr("::ffff:192.0.2.1"))
	wantThrottled(t, err, auth.ScopeAddress)
}

// An organization whose failure budget is spent (here from one address
// that has no budget of its own) refuses uncached keys before PostgreSQL,
// while its keys that a cache knows keep working: this instance's L1, and
// Redis (L2) for a key that another replica looked up. A valid key that no
// cache knows is refused too: the documented price. Other organizations
// are untouched.
func TestFailedLookupsThrottledPerOrg(t *testing.T) {
	f := newFixture(t)
	org, otherOrg := f.org(t), f.org(t)
	inL1, _ := f.key(t, org, nil)
	inL2, _ := f.key(t, org, nil)
	cold, _ := f.key(t, org, nil)
	const budget = 20
	a := f.throttled(t, f.rdb, 0, budget)
	attacker := netip.MustParseAddr("198.51.100.8")
	if _, err := authnFrom(a, inL1, attacker); err != nil {
		t.Fatal(err)
	}
	replica := f.instance(t, false, nil) // shares Redis: its look-up fills L2
	if _, err := authn(replica, inL2); err != nil {
		t.Fatal(err)
	}

	keys := guessed(t, org, 200)
	before, start := a.Stats(), time.Now()
	var throttled int
	for _, k := range keys {
		_, err := authnFrom(a, k, attacker)
		if errors.Is(err, auth.ErrThrottled) {
			wantThrottled(t, err, auth.ScopeOrganization)
			throttled++
		} else if !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("guessed key: err = %v", err)
		}
	}
	bound := budget + refilled(start, budget)
	if n := a.Stats().L3Lookups - before.L3Lookups; n > uint64(bound) || throttled+int(n) != 200 {
		t.Errorf("%d look-ups and %d throttled of 200, want at most %d look-ups", n, throttled, bound)
	}

	client := netip.MustParseAddr("192.0.2.50")
	if _, err := authnFrom(a, inL1, client); err != nil {
		t.Errorf("key cached in process, organization throttled: %v", err)
	}
	if p, err := authnFrom(a, inL2, client); err != nil || p.Org != org {
		t.Errorf("key known to Redis, organization throttled: %v", err)
	}
	_, err := authnFrom(a, cold, client)
	wantThrottled(t, err, auth.ScopeOrganization)
	if _, err := authnFrom(a, guessed(t, otherOrg, 1)[0], attacker); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("another organization: err = %v, want a look-up", err)
	}
}

// Only refusals are charged, after the look-up: keys that resolve cost
// nothing, and a refused key repeated is answered by the negative cache
// without a charge.
func TestOnlyFailedLookupsAreCharged(t *testing.T) {
	f := newFixture(t)
	org := f.org(t)
	a := f.throttled(t, f.rdb, 3, 3)
	client := netip.MustParseAddr("192.0.2.77")
	for range 10 {
		k, _ := f.key(t, org, nil)
		if _, err := authnFrom(a, k, client); err != nil {
			t.Fatalf("valid key: %v", err)
		}
	}
	bad := guessed(t, org, 4)
	for i, k := range bad[:3] {
		for range 5 {
			if _, err := authnFrom(a, k, client); !errors.Is(err, auth.ErrUnauthenticated) {
				t.Fatalf("failure %d: err = %v, want 401", i, err)
			}
		}
	}
	_, err := authnFrom(a, bad[3], client)
	wantThrottled(t, err, auth.ScopeAddress)
	if s := a.Stats(); s.Failures != 3 || s.L3Lookups != 13 {
		t.Errorf("stats %+v, want 3 failures charged and 13 look-ups", s)
	}
}

// With Redis down the budgets live in each instance's local limiter: the
// flood is still bounded.
func TestFailureThrottleWithRedisDown(t *testing.T) {
	f := newFixture(t)
	org := f.org(t)
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 50 * time.Millisecond, ContextTimeoutEnabled: true})
	defer dead.Close()
	const budget = 10
	a := f.throttled(t, dead, budget, 0)
	client := netip.MustParseAddr("198.51.100.9")
	keys := guessed(t, org, 200)
	start := time.Now()
	var throttled int
	for _, k := range keys {
		if _, err := authnFrom(a, k, client); errors.Is(err, auth.ErrThrottled) {
			throttled++
		} else if !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("err = %v", err)
		}
	}
	bound := budget + refilled(start, budget)
	if s := a.Stats(); s.L3Lookups > uint64(bound) || s.L2Errors == 0 || throttled+int(s.L3Lookups) != 200 {
		t.Errorf("Redis down: %d look-ups, %d throttled, stats %+v; want at most %d look-ups", s.L3Lookups, throttled, s, bound)
	}
}

// countingLimiter counts the budget checks that reach the limiter.
type countingLimiter struct {
	auth.FailureLimiter
	checks atomic.Int64
}

func (c *countingLimiter) Allow(ctx context.Context, key string, req, tok ratelimit.Limit) (ratelimit.Decision, error) {
	c.checks.Add(1)
	return c.FailureLimiter.Allow(ctx, key, req, tok)
}

// Once a budget is found spent, the guesses that follow are refused in
// process until it has room again: a flood costs no Redis round trip per
// guess either.
func TestSpentBudgetIsRemembered(t *testing.T) {
	f := newFixture(t)
	org := f.org(t)
	lim := &countingLimiter{FailureLimiter: ratelimit.New(f.rdb, ratelimit.Options{Prefix: "bulkhead:authfail:test:" + uuid.NewString(), Timeout: time.Second})}
	a := f.instance(t, false, func(o *auth.Options) { o.Failures, o.FailuresPerMinutePerAddress = lim, 2 })
	client := netip.MustParseAddr("198.51.100.10")
	keys := guessed(t, org, 103)
	for _, k := range keys[:2] {
		if _, err := authnFrom(a, k, client); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatal(err)
		}
	}
	_, err := authnFrom(a, keys[2], client)
	wantThrottled(t, err, auth.ScopeAddress)
	checks, reads := lim.checks.Load(), a.Stats().L2Lookups
	for _, k := range keys[3:] {
		_, err := authnFrom(a, k, client)
		wantThrottled(t, err, auth.ScopeAddress)
	}
	if n := lim.checks.Load() - checks; n != 0 {
		t.Errorf("%d budget checks reached the limiter for 100 guesses after the budget was spent, want 0", n)
	}
	if n := a.Stats().L2Lookups - reads; n != 0 {
		t.Errorf("%d Redis reads for 100 guesses from an address known to be throttled, want 0", n)
	}
}

// A budget is checked only by an instance that has charged it lately, so
// a replica that has seen no failure of an organization lets its first
// failed look-up through even when another replica has spent the
// organization's shared budget, and then refuses like the other: the
// documented price, one failure per budget and instance. A valid key
// from a clean address and organization costs no budget call at all.
func TestFailureBudgetCheckedWhereItFailed(t *testing.T) {
	f := newFixture(t)
	org, clean := f.org(t), f.org(t)
	valid, _ := f.key(t, clean, nil)
	const budget = 5
	lim := ratelimit.New(f.rdb, ratelimit.Options{Prefix: "bulkhead:authfail:test:" + uuid.NewString(), Timeout: time.Second})
	counting := &countingLimiter{FailureLimiter: lim}
	replica := func() *auth.Authenticator {
		return f.instance(t, false, func(o *auth.Options) {
			o.Failures, o.FailuresPerMinutePerOrg = counting, budget
		})
	}
	one, two := replica(), replica()

	if _, err := authn(one, valid); err != nil {
		t.Fatal(err)
	}
	if n := counting.checks.Load(); n != 0 {
		t.Errorf("a valid key of a clean organization: %d budget checks, want 0", n)
	}
	var throttled int
	for _, k := range guessed(t, org, 3*budget) {
		if _, err := authn(one, k); errors.Is(err, auth.ErrThrottled) {
			throttled++
		}
	}
	if throttled == 0 {
		t.Fatalf("replica one never throttled %d guesses on a budget of %d", 3*budget, budget)
	}
	keys := guessed(t, org, 2)
	if _, err := authn(two, keys[0]); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("replica two's first failure: err = %v, want a look-up (unchecked)", err)
	}
	_, err := authn(two, keys[1])
	wantThrottled(t, err, auth.ScopeOrganization)
}
