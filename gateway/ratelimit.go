package gateway

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/ratelimit"
)

// limiter is what the gateway needs from ratelimit.Limiter.
type limiter interface {
	Allow(ctx context.Context, key string, req, tok ratelimit.Limit) (ratelimit.Decision, error)
	Charge(ctx context.Context, key string, tok ratelimit.Limit, tokens int) error
}

var _ limiter = (*ratelimit.Limiter)(nil)

// limitTimeout is an outer bound on charging a request's tokens after
// the answer; the limiter's own per-call Redis timeout
// (BULKHEAD_REDIS_TIMEOUT) is shorter and decides when it falls back.
const limitTimeout = 2 * time.Second

var errLimiterUnavailable = &HTTPError{Code: fasthttp.StatusServiceUnavailable, Type: "server_error", ErrCode: "rate_limiter_unavailable",
	Msg: "Rate limits cannot be checked right now; retry shortly."}

func limitsOf(p *auth.Principal) (req, tok ratelimit.Limit) {
	if p.RateLimitPerMinute > 0 {
		req = ratelimit.PerMinute(p.RateLimitPerMinute)
	}
	if p.TokensPerMinute > 0 {
		tok = ratelimit.PerMinute(p.TokensPerMinute)
	}
	return req, tok
}

// admit checks the principal's budgets and sets OpenAI's x-ratelimit-*
// headers on the response, on success and on 429 alike.
func (s *Server) admit(rc *fasthttp.RequestCtx, p *auth.Principal) error {
	if s.limiter == nil {
		return nil
	}
	req, tok := limitsOf(p)
	if req.IsZero() && tok.IsZero() {
		return nil
	}
	d, err := s.limiter.Allow(s.base, p.LimitKey, req, tok) // Redis calls bounded inside (see proxy)
	if err != nil {
		if errors.Is(err, ratelimit.ErrUnavailable) {
			return withCause(errLimiterUnavailable, err)
		}
		return err
	}
	d.Headers(rc.Response.Header.Set)
	if d.Allowed {
		return nil
	}
	which, limit := "requests", d.Requests.Limit
	if d.Requests.Limit == 0 || d.Requests.Remaining > 0 {
		which, limit = "tokens", d.Tokens.Limit
	}
	s.metrics.rateLimited.WithLabelValues(which).Inc()
	return &HTTPError{Code: fasthttp.StatusTooManyRequests, Type: which, ErrCode: "rate_limit_exceeded",
		Msg: "Rate limit reached for " + which + ": limit " + strconv.Itoa(limit) + " per minute. Retry after " +
			strconv.Itoa(int((d.RetryAfter+time.Second-1)/time.Second)) + "s."}
}

// charge spends the request's actual token usage from the principal's
// token budget. It runs after the answer, on a server-owned context, so a
// caller that left is still charged.
func (s *Server) charge(p *auth.Principal, tokens int) {
	if s.limiter == nil || p.TokensPerMinute <= 0 || tokens <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(s.base, limitTimeout)
	defer cancel()
	_, tok := limitsOf(p)
	if err := s.limiter.Charge(ctx, p.LimitKey, tok, tokens); err != nil {
		s.log.Warn("token usage not charged", zap.String("key", p.LimitKey), zap.Int("tokens", tokens), zap.Error(err))
	}
}
