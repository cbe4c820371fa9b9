package control

import (
	"errors"

	"github.com/google/uuid"
	"github.com/valyala/fasthttp"

	"github.com/bulkheadhq/bulkhead/gateway"
	"github.com/bulkheadhq/bulkhead/store"
)

// Dollar budgets (issue 15) over HTTP, on the store functions `bulkhead
// budget ...` runs (store/budgets.go: SetBudget, RemoveBudget, each
// audited there with the operator's actor). Setting and removing are the
// operators'; a tenant administrator reads its own organization's budgets
// (store.BudgetsFor, as the app role inside its tenant context: RLS keeps
// other organizations' out). The gateways read budgets again within
// their budget cache's lifetime (10 s); what is spent lives in Redis,
// rebuilt from the request log.

// setBudgetRequest sets the budget of one scope: the organization (no
// key, no end user), a key, an end user, or a key's end user.
type setBudgetRequest struct {
	APIKeyID *string `json:"api_key_id,omitempty"`
	EndUser  *string `json:"end_user,omitempty"`
	// USD is the limit, a decimal amount of dollars ("25", "0.5").
	USD string `json:"usd"`
	// Window is day or month (UTC calendar), or rolling:DURATION
	// ("rolling:6h").
	Window string `json:"window"`
	// AlertAtPermille are the soft thresholds in thousandths of the
	// limit (800 = 80%); absent: none.
	AlertAtPermille []int `json:"alert_at_permille,omitempty"`
}

// budgetScope names the scope of a budget to remove.
type budgetScope struct {
	APIKeyID *string `json:"api_key_id,omitempty"`
	EndUser  *string `json:"end_user,omitempty"`
}

type budgetList struct {
	Object string         `json:"object"`
	Data   []store.Budget `json:"data"`
}

var errBudgetNotFound = &gateway.HTTPError{Code: fasthttp.StatusNotFound, Type: "invalid_request_error", ErrCode: "not_found",
	Msg: "No budget of that scope."}

// scope reads a budget's key and end user from the body.
func (bs budgetScope) parse() (key *uuid.UUID, user *string, err error) {
	if bs.APIKeyID != nil {
		id, perr := uuid.Parse(*bs.APIKeyID)
		if perr != nil || len(*bs.APIKeyID) != 36 {
			return nil, nil, badBody("api_key_id", "Field 'api_key_id' must be a key's id (absent: the whole organization).")
		}
		key = &id
	}
	if bs.EndUser != nil && !store.ValidEndUser(*bs.EndUser) {
		return nil, nil, badBody("end_user", "Field 'end_user' must be 1 to 256 bytes without control characters (absent: every end user).")
	}
	return key, bs.EndUser, nil
}

// budgetError maps the budget store's sentinels to answers.
func budgetError(err error) error {
	switch {
	case errors.Is(err, store.ErrNoOrganization):
		return errOrgNotFound
	case errors.Is(err, store.ErrNoKey):
		return badBody("api_key_id", "Field 'api_key_id' must name one of the organization's keys.")
	case errors.Is(err, store.ErrNotFound):
		return errBudgetNotFound
	}
	return err
}

func (s *Server) listBudgets(c *call) (any, error) {
	org, err := s.scopedOrg(c)
	if err != nil {
		return nil, err
	}
	bs, err := s.opts.Store.BudgetsFor(c.ctx, org)
	if bs == nil {
		bs = []store.Budget{}
	}
	return budgetList{"list", bs}, err
}

func (s *Server) setBudget(c *call) (any, error) {
	req := c.body.(*setBudgetRequest)
	key, user, err := budgetScope{req.APIKeyID, req.EndUser}.parse()
	if err != nil {
		return nil, err
	}
	limit, err := store.ParseUSD(req.USD)
	if err != nil || limit <= 0 || limit > store.MaxBudget {
		return nil, badBody("usd", "Field 'usd' must be a decimal amount of dollars, more than 0 and at most "+store.MaxBudget.String()+", at most six decimals (\"25\", \"0.5\").")
	}
	window, err := store.ParseBudgetWindow(req.Window)
	if err != nil {
		return nil, badBody("window", "Field 'window' must be day, month or rolling:DURATION (\"rolling:6h\", 1 minute to 366 days).")
	}
	for _, a := range req.AlertAtPermille {
		if a <= 0 || a > 10_000 {
			return nil, badBody("alert_at_permille", "Field 'alert_at_permille' must list thresholds in thousandths of the limit, 1 to 10000 (800 = 80%).")
		}
	}
	org, err := c.id("id", errOrgNotFound)
	if err != nil {
		return nil, err
	}
	b, err := s.opts.Admin.As(c.p.actor).SetBudget(c.ctx, store.Budget{OrgID: org, KeyID: key, EndUser: user,
		Limit: limit, Window: window, AlertAt: req.AlertAtPermille})
	return b, budgetError(err)
}

func (s *Server) removeBudget(c *call) (any, error) {
	key, user, err := c.body.(*budgetScope).parse()
	if err != nil {
		return nil, err
	}
	org, err := c.id("id", errOrgNotFound)
	if err != nil {
		return nil, err
	}
	b, err := s.opts.Admin.As(c.p.actor).RemoveBudget(c.ctx, org, key, user)
	return b, budgetError(err)
}
