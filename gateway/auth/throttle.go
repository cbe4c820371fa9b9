package auth

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/ratelimit"
)

// The failure throttle bounds the PostgreSQL work that unknown API keys can
// cause. The key checksum is public, so anyone can mint well-formed keys
// for a real organization, and each new one misses L1 and L2 and costs a
// look-up (L3). Each look-up that PostgreSQL refuses (unknown, revoked or
// expired key) is charged to two failure budgets: the client address's
// and the organization's (the key's own org segment). Before an L3
// look-up both budgets are checked, without spending, and a client or
// organization with none left gets ErrThrottled with no database work.
//
// What it costs legitimate traffic: nothing on the L1 path; a key that
// resolves is never charged; the check runs only where L3 would, after L1
// and L2 missed. So while an organization is throttled its keys known to
// this instance (L1) or to any replica through Redis (L2, AuthRedisTTL
// after their last look-up) keep working, and only a valid key that no
// cache knows (unused for AuthRedisTTL, or just created) is refused with
// 429 and Retry-After until the organization's failures subside. That is
// the price of a bound that holds whatever the number of addresses: a
// look-up cannot tell a valid key from a guess without doing the work
// being bounded.
//
// Not chosen, for now: a complete per-organization set of key hashes
// (in process or in Redis) would refuse guesses with no look-up at all
// and let cold valid keys through, but it must learn of every new key
// before its first use (the admin commands would have to publish, and
// single-instance mode has no channel), loading it is itself a look-up
// per organization (random organizations need the address budget
// anyway), and a Bloom filter's false positives still reach PostgreSQL.
//
// A budget is checked only by an instance that has itself charged it a
// failure within the last minute (failureMemory, the time an empty budget
// takes to refill): valid keys from addresses and organizations that have
// not failed here, all of a healthy deployment's first touches, cost no
// budget round trips to Redis. The price is one unchecked failure per
// budget per instance per minute: an instance that has not seen an
// address or organization fail lets its first failed look-up through
// even when other replicas have spent the budget, then checks as before.
//
// Checks and charges are separate steps, so look-ups already in flight
// when a budget runs out still complete: the overshoot is bounded by the
// concurrent L3 look-ups. Concurrent misses for one key share one look-up
// and its outcome (the first caller's address is checked and charged).

// ErrThrottled is matched (errors.Is) by the *ThrottledError that
// Authenticate returns when a client address or an organization has spent
// its budget of failed look-ups. Answer 429 with Retry-After.
var ErrThrottled = errors.New("too many failed authentications")

// Scopes of a ThrottledError.
const (
	ScopeAddress      = "address"
	ScopeOrganization = "organization"
)

// ThrottledError is the error of a throttled look-up.
type ThrottledError struct {
	// Scope is ScopeAddress or ScopeOrganization: for logs and metrics,
	// not for the caller, who gets the same answer for both.
	Scope string
	// RetryAfter is when the budget has room for one more look-up.
	RetryAfter time.Duration
}

func (e *ThrottledError) Error() string {
	return "too many failed authentications per " + e.Scope + "; retry after " + e.RetryAfter.String()
}

func (e *ThrottledError) Is(target error) bool { return target == ErrThrottled }

// FailureLimiter is what the throttle needs from ratelimit.Limiter. A
// failure budget is a token budget of the limiter: Allow with no request
// limit checks that one unit is left without spending it, and Charge
// spends one unit per failure.
type FailureLimiter interface {
	Allow(ctx context.Context, key string, req, tok ratelimit.Limit) (ratelimit.Decision, error)
	Charge(ctx context.Context, key string, tok ratelimit.Limit, tokens int) error
}

var _ FailureLimiter = (*ratelimit.Limiter)(nil)

// addressKey names a client address's failure budget. IPv6 clients are
// counted per /64, the block one subscriber usually holds, so that cycling
// through a prefix does not multiply the budget.
func addressKey(client netip.Addr) string {
	client = client.Unmap()
	if client.Is6() {
		p, _ := client.Prefix(64) // cannot fail: 64 bits fit an IPv6 address
		return "a:" + p.String()
	}
	return "a:" + client.String()
}

func orgKey(org uuid.UUID) string { return "o:" + org.String() }

// checkFailures returns a *ThrottledError when client's or org's failure
// budget is spent, nil otherwise. A limiter error lets the look-up
// proceed: the limiter only fails when its caller gives up, and its
// Redis outages are decided by its local fallback.
func (a *Authenticator) checkFailures(ctx context.Context, client netip.Addr, org uuid.UUID) error {
	if a.opts.Failures == nil {
		return nil
	}
	if !a.addrLimit.IsZero() && client.IsValid() && a.failedHere(addressKey(client)) {
		if retry, ok := a.failureBudget(ctx, addressKey(client), a.addrLimit); !ok {
			a.n.throttledAddr.Add(1)
			return &ThrottledError{Scope: ScopeAddress, RetryAfter: retry}
		}
	}
	if !a.orgLimit.IsZero() && a.failedHere(orgKey(org)) {
		if retry, ok := a.failureBudget(ctx, orgKey(org), a.orgLimit); !ok {
			a.n.throttledOrg.Add(1)
			return &ThrottledError{Scope: ScopeOrganization, RetryAfter: retry}
		}
	}
	return nil
}

// addressSpent returns a *ThrottledError, with no I/O, when this process
// already found client's failure budget spent and it has not refilled
// yet: its next keys are answered before L2 too, so a flood from one
// address costs neither PostgreSQL nor Redis work once it is throttled.
// The price: a valid key that this instance has not cached (L1) is
// refused from that address until the budget refills, like a guess.
// Organizations are not short-cut this way: their keys known to L2 keep
// working while guesses at them are throttled (see checkFailures).
func (a *Authenticator) addressSpent(client netip.Addr) error {
	if a.opts.Failures == nil || a.addrLimit.IsZero() || !client.IsValid() {
		return nil
	}
	if until, ok := a.spent.GetIfPresent(addressKey(client)); ok {
		if wait := time.Until(until); wait > 0 {
			a.n.throttledAddr.Add(1)
			return &ThrottledError{Scope: ScopeAddress, RetryAfter: wait}
		}
	}
	return nil
}

// spentBudgets bounds the spent budgets remembered in process; past it,
// one is forgotten and costs a limiter call again.
const spentBudgets = 10_000

// failureBudget reports whether key's failure budget has a unit left,
// spending nothing, and otherwise when it will. A budget found spent is
// remembered until then: a budget refills no faster than the limiter said
// (other replicas can only spend more), so the guesses that follow are
// refused without a Redis round trip.
func (a *Authenticator) failureBudget(ctx context.Context, key string, lim ratelimit.Limit) (time.Duration, bool) {
	if until, ok := a.spent.GetIfPresent(key); ok {
		if wait := time.Until(until); wait > 0 {
			return wait, false
		}
	}
	d, err := a.opts.Failures.Allow(ctx, key, ratelimit.Limit{}, lim)
	if err != nil {
		a.log.Debug("failure budget not checked", zap.Error(err))
		return 0, true
	}
	if !d.Allowed && d.RetryAfter > 0 {
		a.spent.Set(key, time.Now().Add(d.RetryAfter))
	}
	return d.RetryAfter, d.Allowed
}

// chargeFailure spends one unit of client's and org's failure budgets
// after PostgreSQL refused a key.
func (a *Authenticator) chargeFailure(ctx context.Context, client netip.Addr, org uuid.UUID) {
	a.n.failures.Add(1)
	if a.opts.Failures == nil {
		return
	}
	charge := func(key string, lim ratelimit.Limit) {
		a.failing.Set(key, struct{}{})
		if err := a.opts.Failures.Charge(ctx, key, lim, 1); err != nil {
			a.log.Debug("failed look-up not charged", zap.String("budget", key[:1]), zap.Error(err))
		}
	}
	if !a.addrLimit.IsZero() && client.IsValid() {
		charge(addressKey(client), a.addrLimit)
	}
	if !a.orgLimit.IsZero() {
		charge(orgKey(org), a.orgLimit)
	}
}

// failedHere reports whether this instance charged key's budget a failure
// within failureMemory: only then is the budget checked.
func (a *Authenticator) failedHere(key string) bool {
	_, ok := a.failing.GetIfPresent(key)
	return ok
}

// failureMemory is how long an instance checks a budget after charging
// it: a minute, the time an empty budget takes to refill.
const failureMemory = time.Minute

// perMinute is the failure budget of n per minute, or none for n <= 0.
func perMinute(n int) ratelimit.Limit {
	if n <= 0 {
		return ratelimit.Limit{}
	}
	return ratelimit.PerMinute(n)
}
