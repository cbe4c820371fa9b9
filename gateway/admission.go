package gateway

import (
	"context"
	"errors"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/gateway/openai"
	"github.com/bulkheadhq/bulkhead/ratelimit"
)

// limiter is what the gateway needs from ratelimit.Limiter.
type limiter interface {
	Allow(ctx context.Context, key string, req, tok ratelimit.Limit) (ratelimit.Decision, error)
	Reserve(ctx context.Context, key string, req, tok ratelimit.Limit, tokens int) (ratelimit.Decision, error)
	Settle(ctx context.Context, key string, tok ratelimit.Limit, r ratelimit.Reservation, used int) error
}

var _ limiter = (*ratelimit.Limiter)(nil)

// limitTimeout is an outer bound on settling a request's tokens after
// the answer; the limiter's own per-call Redis timeout
// (BULKHEAD_REDIS_TIMEOUT) is shorter and decides when it falls back.
const limitTimeout = 2 * time.Second

func limitsOf(p *auth.Principal) (req, tok ratelimit.Limit) {
	if p.RateLimitPerMinute > 0 {
		req = ratelimit.PerMinute(p.RateLimitPerMinute)
	}
	if p.TokensPerMinute > 0 {
		tok = ratelimit.PerMinute(p.TokensPerMinute)
	}
	return req, tok
}

// limiterError maps a failed limiter decision: 503 when the limiter fails
// closed without Redis, the error itself otherwise.
func limiterError(err error) error {
	if errors.Is(err, ratelimit.ErrUnavailable) {
		return withCause(errLimiterUnavailable, err)
	}
	return err
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
		return limiterError(err)
	}
	d.AppendHeaders(rc.Response.Header.SetBytesV)
	if d.Allowed {
		return nil
	}
	which, limit := "requests", d.Requests.Limit
	if d.Requests.Limit == 0 || d.Requests.Remaining > 0 {
		which, limit = "tokens", d.Tokens.Limit
	}
	s.metrics.rateLimited.WithLabelValues(which).Inc()
	return rateLimited(which, limit, d.RetryAfter)
}

// reserve sets the request's token estimate aside from the principal's
// token budget once the body is known, before it is forwarded (admit has
// spent its request unit): the prompt's estimate plus max_tokens, or
// BULKHEAD_TPM_DEFAULT_COMPLETION_ESTIMATE without one, so that concurrent
// requests cannot together take more than the budget. It updates the
// x-ratelimit-*-tokens headers. A refusal is a 429 of type "tokens", and a
// request that could never fit says so, without Retry-After.
func (s *Server) reserve(rc *fasthttp.RequestCtx, x *exchange, r openai.Request) error {
	p := x.principal
	if s.limiter == nil || p.TokensPerMinute <= 0 {
		return nil
	}
	req, tok := limitsOf(p)
	n := openai.ReserveTokens(x.ep, r, s.cfg.TPMDefaultCompletionEstimate)
	d, err := s.limiter.Reserve(s.base, p.LimitKey, req, tok, n)
	if err != nil {
		return limiterError(err)
	}
	d.AppendHeaders(rc.Response.Header.SetBytesV)
	if d.Allowed {
		x.reservation = d.Reservation
		return nil
	}
	s.metrics.rateLimited.WithLabelValues("tokens").Inc()
	if n > p.TokensPerMinute {
		rc.Response.Header.Del(ratelimit.HeaderRetryAfter)
		return tokensTooLarge(p.TokensPerMinute, n)
	}
	return tokensRateLimited(p.TokensPerMinute, n, d.RetryAfter)
}

// settle reconciles the request's reservation with the tokens it used
// (0 for a request that failed, which gives the reservation back). It runs
// after the answer, on a server-owned context, so a caller that left is
// still charged.
func (s *Server) settle(x *exchange, used int) {
	p := x.principal
	if s.limiter == nil || p == nil || p.TokensPerMinute <= 0 || used <= 0 && x.reservation.Tokens == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(s.base, limitTimeout)
	defer cancel()
	_, tok := limitsOf(p)
	if err := s.limiter.Settle(ctx, p.LimitKey, tok, x.reservation, used); err != nil {
		s.log.Warn("token usage not settled", zap.String("key", p.LimitKey), zap.Int("reserved", x.reservation.Tokens),
			zap.Int("tokens", used), zap.Error(err))
	}
}
