package gateway

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/valyala/fasthttp"

	"github.com/bulkheadhq/bulkhead/gateway/budget"
	"github.com/bulkheadhq/bulkhead/gateway/openai"
	"github.com/bulkheadhq/bulkhead/ratelimit"
	"github.com/bulkheadhq/bulkhead/store"
)

// budgets is what the gateway needs of budget.Enforcer.
type budgets interface {
	Reserve(ctx context.Context, r budget.Request) (budget.Decision, budget.Reservation, error)
	Settle(ctx context.Context, res budget.Reservation, actual store.MicroUSD)
	Prefetch(org uuid.UUID)
}

var _ budgets = (*budget.Enforcer)(nil)

// HeaderBudgetRemaining is the dollars the tightest budget that applies to
// the request has left after its reservation (decimal text), on every
// answer a budget applies to, 429s included; HeaderBudgetLevel names that
// budget's level (organization, key, user, key+user). A request admitted
// from the replica's lease (budget/lease.go) sees what Redis had left at
// that replica's last lease, less what the replica has reserved since:
// exact with one replica; with several, other replicas' spending of the
// last second may not be in it yet (a refusal's figure is always Redis's).
const (
	HeaderBudgetRemaining = "X-Bulkhead-Budget-Remaining-Usd"
	HeaderBudgetLevel     = "X-Bulkhead-Budget-Level"
)

var errBudgetUnavailable = &HTTPError{Code: fasthttp.StatusServiceUnavailable, Type: "server_error", ErrCode: "budget_unavailable",
	Msg: "Spending budgets cannot be checked right now; retry shortly."}

// insufficientQuota is OpenAI's answer to an account out of credit, for a
// request a budget refuses.
func insufficientQuota(d budget.Decision) *HTTPError {
	return &HTTPError{Code: fasthttp.StatusTooManyRequests, Type: "insufficient_quota", ErrCode: "insufficient_quota",
		Msg: "You exceeded your current quota: the " + d.Level + " budget of $" + d.Limit.String() + " per " + windowText(d.Window) +
			" has $" + d.Remaining.String() + " left, less than this request may cost (its prompt and max_tokens at the model's prices)."}
}

func windowText(w store.BudgetWindow) string {
	switch w.Kind {
	case "day":
		return "UTC day"
	case "month":
		return "UTC month"
	}
	return w.Rolling.String() + " (rolling)"
}

// maxCost is the most a request may cost: its prompt's estimate at the
// input price plus max_tokens (or BULKHEAD_TPM_DEFAULT_COMPLETION_ESTIMATE
// without one) at the output price. 0 for a model outside the catalog,
// which has no cost: only a budget already used up refuses it.
func (s *Server) maxCost(x *exchange, r openai.Request) store.MicroUSD {
	p, ok := priceOf(x)
	if !ok {
		return 0
	}
	out := 0
	switch {
	case x.ep == openai.Embeddings:
	case r.MaxOutputTokens > 0:
		out = r.MaxOutputTokens
	default:
		out = max(s.cfg.TPMDefaultCompletionEstimate, 0)
	}
	return p.Cost(openai.EstimateTokens(r.Prompt), 0, out)
}

// reserveBudget sets the request's maximum cost aside from every budget
// that applies to it (its organization's, its key's, its end user's) and
// sets the remaining-budget headers. Over budget: 429 insufficient_quota,
// with Retry-After until spend first leaves the window.
// Budgets fail closed: unreachable Redis or PostgreSQL is a 503.
func (s *Server) reserveBudget(rc *fasthttp.RequestCtx, x *exchange, r openai.Request) error {
	if s.budgets == nil {
		return nil
	}
	p := x.principal
	d, res, err := s.budgets.Reserve(s.base, budget.Request{Org: p.Org, Key: p.KeyID, EndUser: x.endUser, Max: s.maxCost(x, r)})
	if err != nil {
		if errors.Is(err, budget.ErrUnavailable) {
			return withCause(errBudgetUnavailable, err)
		}
		return err
	}
	if !d.Applies {
		return nil
	}
	var buf [24]byte
	rc.Response.Header.SetBytesV(HeaderBudgetRemaining, d.Remaining.Append(buf[:0]))
	rc.Response.Header.Set(HeaderBudgetLevel, d.Level)
	if !d.Allowed {
		// When some spend leaves the window at the earliest: a retry
		// before then is refused again (unless a reservation is released).
		wait := time.Until(d.Window.NextChange(time.Now()))
		rc.Response.Header.Set(ratelimit.HeaderRetryAfter, strconv.FormatInt(ratelimit.RetryAfterSeconds(wait), 10))
		return insufficientQuota(d)
	}
	x.budget, x.budgetHeld = res, true
	return nil
}

// settleBudget reconciles the request's budget reservation with what it
// cost (0 for a failed request: the reservation is released), after the
// answer, on a server-owned context.
func (s *Server) settleBudget(x *exchange, cost store.MicroUSD) {
	if !x.budgetHeld {
		return
	}
	x.budgetHeld = false
	// Settle does no I/O: a request answered is charged even at shutdown
	// (what it queues for Redis runs on the enforcer's own context).
	s.budgets.Settle(s.base, x.budget, cost)
}
