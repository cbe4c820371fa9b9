package control

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/netip"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/gateway"
	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/ratelimit"
)

// Failed credentials on the control listener are throttled as the data
// plane's failed API keys are (gateway/auth/throttle.go): every refused
// credential (a login or a request's bearer) is charged to the failure
// budget of the client address (IPv6: its /64) and, where guessing costs
// a database look-up, to that of the credential's prefix: an operator
// token's first 16 characters, or an admin key's organization (bhk_ and
// the organization it names), so that guesses at one organization's
// admin keys are bounded whatever the number of addresses. JWTs (checked
// in process, no database work) and session tokens are charged to the
// address only: a budget per JWT header would let anyone lock every
// tenant administrator out. Before a credential is verified both budgets
// are checked without spending; a spent one answers 429 with
// Retry-After, the same for either budget. The budgets live in the
// limiter's Redis, so every replica counts together (its local fallback
// while Redis is down).
//
// The price: while an address or a prefix is throttled, its valid
// credentials are refused too (a guess and a valid credential cannot be
// told apart without the work being bounded); a valid credential is never
// charged.

// throttle holds the control listener's failure budgets.
type throttle struct {
	lim        auth.FailureLimiter // nil: no throttling
	addr, cred ratelimit.Limit     // zero: that budget is not kept
}

func newThrottle(opts Options) throttle {
	per := func(n int) ratelimit.Limit {
		if n <= 0 || opts.Failures == nil {
			return ratelimit.Limit{}
		}
		return ratelimit.PerMinute(n)
	}
	return throttle{lim: opts.Failures, addr: per(opts.FailuresPerMinutePerAddress), cred: per(opts.FailuresPerMinutePerPrefix)}
}

// budget is one failure budget of a request: its limiter key and limit.
type budget struct {
	key string
	lim ratelimit.Limit
}

// budgets are the failure budgets a credential cred from rc's peer is
// charged to.
func (t throttle) budgets(rc *fasthttp.RequestCtx, cred string) []budget {
	var bs []budget
	if a, ok := netip.AddrFromSlice(rc.RemoteIP()); ok && !t.addr.IsZero() {
		bs = append(bs, budget{"a:" + addressKey(a), t.addr})
	}
	if p := credentialPrefix(cred); p != "" && !t.cred.IsZero() {
		h := sha256.Sum256([]byte(p)) // no credential text in Redis keys
		bs = append(bs, budget{"p:" + hex.EncodeToString(h[:16]), t.cred})
	}
	return bs
}

// addressKey names a client address's budget; IPv6 per /64, the block one
// subscriber usually holds.
func addressKey(a netip.Addr) string {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64) // cannot fail: 64 bits fit an IPv6 address
		return p.String()
	}
	return a.String()
}

// credentialPrefix is the part of cred whose guesses share a budget, ""
// for credentials charged to the address only.
func credentialPrefix(cred string) string {
	switch {
	case strings.HasPrefix(cred, orgAdminKeyPrefix) && len(cred) >= len(orgAdminKeyPrefix)+32:
		return cred[:len(orgAdminKeyPrefix)+32]
	case strings.HasPrefix(cred, operatorTokenPrefix) && len(cred) >= 16:
		return cred[:16]
	}
	return ""
}

// errThrottled answers a request whose address or credential prefix has
// spent its failure budget.
func errThrottled(secs string) *gateway.HTTPError {
	return &gateway.HTTPError{Code: fasthttp.StatusTooManyRequests, Type: "requests", ErrCode: "too_many_failed_credentials",
		Msg: "Too many failed credentials from this address or for this credential. Retry after " + secs + "s."}
}

// guard runs verify, which checks cred, unless one of its failure budgets
// is spent (then 429 with Retry-After, and no verification), and charges
// them when verify refuses the credential (errUnauthenticated). A limiter
// error lets the verification proceed: its Redis outages are decided by
// its local fallback.
func (s *Server) guard(ctx context.Context, rc *fasthttp.RequestCtx, cred string, verify func() error) error {
	if s.throttle.lim == nil || cred == "" { // no credential: nothing to guess, nothing looked up
		return verify()
	}
	bs := s.throttle.budgets(rc, cred)
	for _, b := range bs {
		d, err := s.throttle.lim.Allow(ctx, b.key, ratelimit.Limit{}, b.lim)
		if err != nil {
			s.log.Debug("control failure budget not checked", zap.Error(err))
			continue
		}
		if !d.Allowed {
			secs := strconv.FormatInt(ratelimit.RetryAfterSeconds(d.RetryAfter), 10)
			rc.Response.Header.Set(ratelimit.HeaderRetryAfter, secs)
			return errThrottled(secs)
		}
	}
	err := verify()
	if errors.Is(err, errUnauthenticated) {
		for _, b := range bs {
			if cerr := s.throttle.lim.Charge(ctx, b.key, b.lim, 1); cerr != nil {
				s.log.Debug("control failure not charged", zap.String("budget", b.key[:1]), zap.Error(cerr))
			}
		}
	}
	return err
}

// loginsPerMinutePerActor bounds the console sessions one credential
// opens: with sessions in Redis there is no global cap (a cap would let
// one credential lock everyone out), so each actor may log in 30 times a
// minute, at most 900 sessions alive at the default 30-minute TTL.
const loginsPerMinutePerActor = 30

// allowLogin spends one of actor's logins, or answers 429 with
// Retry-After. A limiter error lets the login proceed.
func (s *Server) allowLogin(ctx context.Context, rc *fasthttp.RequestCtx, actor string) error {
	if s.throttle.lim == nil {
		return nil
	}
	h := sha256.Sum256([]byte(actor))
	d, err := s.throttle.lim.Allow(ctx, "l:"+hex.EncodeToString(h[:16]), ratelimit.PerMinute(loginsPerMinutePerActor), ratelimit.Limit{})
	if err != nil || d.Allowed {
		return nil
	}
	secs := strconv.FormatInt(ratelimit.RetryAfterSeconds(d.RetryAfter), 10)
	rc.Response.Header.Set(ratelimit.HeaderRetryAfter, secs)
	return &gateway.HTTPError{Code: fasthttp.StatusTooManyRequests, Type: "requests", ErrCode: "too_many_logins",
		Msg: "Too many console logins with this credential. Retry after " + secs + "s."}
}
