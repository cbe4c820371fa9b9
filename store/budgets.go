package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// BudgetWindow is the period a budget's spend is summed over: a UTC
// calendar day or month ("day", "month"), or the last Rolling ("rolling").
type BudgetWindow struct {
	Kind    string
	Rolling time.Duration
}

// Bounds of a rolling window (migration 00017 checks them too).
const (
	MinRollingWindow = time.Minute
	MaxRollingWindow = 366 * 24 * time.Hour
)

// ParseBudgetWindow reads "day", "month" or "rolling:DURATION" (a Go
// duration of whole seconds from 1m to 8784h, e.g. rolling:24h).
func ParseBudgetWindow(s string) (BudgetWindow, error) {
	switch s {
	case "day", "month":
		return BudgetWindow{Kind: s}, nil
	}
	d, ok := strings.CutPrefix(s, "rolling:")
	if !ok {
		return BudgetWindow{}, fmt.Errorf("window %q: want day, month or rolling:DURATION (e.g. rolling:24h)", s)
	}
	dur, err := time.ParseDuration(d)
	if err != nil || dur < MinRollingWindow || dur > MaxRollingWindow || dur%time.Second != 0 {
		return BudgetWindow{}, fmt.Errorf("window %q: the rolling duration must be whole seconds from 1m to 8784h", s)
	}
	return BudgetWindow{Kind: "rolling", Rolling: dur}, nil
}

func (w BudgetWindow) String() string {
	if w.Kind == "rolling" {
		return "rolling:" + w.Rolling.String()
	}
	return w.Kind
}

// MarshalJSON writes the window as ParseBudgetWindow reads it.
func (w BudgetWindow) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(w.String())), nil }

// Start is where the window in force at now begins: UTC midnight, the
// first of the UTC month, or now minus the rolling duration.
func (w BudgetWindow) Start(now time.Time) time.Time {
	now = now.UTC()
	switch w.Kind {
	case "day":
		return time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	case "month":
		return time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	}
	return now.Add(-w.Rolling)
}

// NextChange is when spend next leaves the window in force at now: the
// next UTC midnight or first of the month; for a rolling window, the next
// of its 60 buckets (gateway/budget), the soonest any spend can expire.
func (w BudgetWindow) NextChange(now time.Time) time.Time {
	start := w.Start(now)
	switch w.Kind {
	case "day":
		return start.AddDate(0, 0, 1)
	case "month":
		return start.AddDate(0, 1, 0)
	}
	step := max(w.Rolling/60, time.Second).Truncate(time.Second)
	return now.Truncate(step).Add(step)
}

// Budget is a limit on what an organization (KeyID and EndUser nil), one
// of its keys, one of its end users, or a key's end user spends in a
// window, at the catalog's prices (requests to models outside the
// catalog cost nothing). AlertAt are its soft thresholds in per-mille of
// Limit (800: 80%), each announced once per window.
type Budget struct {
	ID        uuid.UUID    `json:"id"`
	OrgID     uuid.UUID    `json:"organization_id"`
	KeyID     *uuid.UUID   `json:"api_key_id"`
	EndUser   *string      `json:"end_user"`
	Limit     MicroUSD     `json:"limit_usd"`
	Window    BudgetWindow `json:"window"`
	AlertAt   []int        `json:"alert_at_permille"`
	CreatedAt time.Time    `json:"created_at"`
	UpdatedAt time.Time    `json:"updated_at"`
}

// Level names the budget's scope: "organization", "key", "user" or
// "key+user".
func (b Budget) Level() string {
	switch {
	case b.KeyID != nil && b.EndUser != nil:
		return "key+user"
	case b.KeyID != nil:
		return "key"
	case b.EndUser != nil:
		return "user"
	}
	return "organization"
}

// MaxBudget is the largest limit ($1e9; the table checks it too).
const MaxBudget MicroUSD = 1_000_000_000 * 1_000_000

const budgetColumns = `id, organization_id, api_key_id, end_user, limit_micros, window_kind, rolling_seconds,
	alert_permille, created_at, updated_at`

func scanBudget(row pgx.Row) (Budget, error) {
	var b Budget
	var secs *int32
	var alerts []int16
	err := row.Scan(&b.ID, &b.OrgID, &b.KeyID, &b.EndUser, &b.Limit, &b.Window.Kind, &secs, &alerts, &b.CreatedAt, &b.UpdatedAt)
	if secs != nil {
		b.Window.Rolling = time.Duration(*secs) * time.Second
	}
	b.AlertAt = make([]int, len(alerts))
	for i, a := range alerts {
		b.AlertAt[i] = int(a)
	}
	return b, err
}

// ValidEndUser reports whether u may name an end user: 1 to 256 bytes of
// UTF-8 without control characters.
func ValidEndUser(u string) bool {
	return u != "" && len(u) <= 256 && utf8.ValidString(u) && !strings.ContainsFunc(u, unicode.IsControl)
}

func (b Budget) validate() error {
	var problems []string
	if b.Limit <= 0 || b.Limit > MaxBudget {
		problems = append(problems, fmt.Sprintf("the limit must be more than 0 and at most %s US dollars", MaxBudget))
	}
	if _, err := ParseBudgetWindow(b.Window.String()); err != nil {
		problems = append(problems, err.Error())
	}
	if b.EndUser != nil && !ValidEndUser(*b.EndUser) {
		problems = append(problems, "the end user must be 1 to 256 bytes without control characters")
	}
	for _, a := range b.AlertAt {
		if a <= 0 || a > 10_000 {
			problems = append(problems, fmt.Sprintf("alert threshold %d‰ is out of range (more than 0, at most 10, i.e. 1000%%)", a))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// ErrNoKey: a budget names a key its organization does not have.
var ErrNoKey = errors.New("no such key in the organization")

// SetBudget creates or replaces the budget of b's scope (organization,
// key, end user), audited. A missing organization is ErrNoOrganization, a
// key of another or no organization ErrNoKey.
func (a *Admin) SetBudget(ctx context.Context, b Budget) (Budget, error) {
	if err := b.validate(); err != nil {
		return Budget{}, fmt.Errorf("setting a budget: %w", err)
	}
	alerts := append([]int{}, b.AlertAt...) // never nil: the column is NOT NULL
	slices.Sort(alerts)
	alerts = slices.Compact(alerts)
	var secs *int32
	if b.Window.Kind == "rolling" {
		s := int32(b.Window.Rolling / time.Second)
		secs = &s
	}
	var out Budget
	err := a.inTenant(ctx, b.OrgID, func(tx pgx.Tx) error {
		var err error
		out, err = scanBudget(tx.QueryRow(ctx, `INSERT INTO budgets
			(organization_id, api_key_id, end_user, limit_micros, window_kind, rolling_seconds, alert_permille)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (organization_id, api_key_id, end_user) DO UPDATE SET limit_micros = excluded.limit_micros,
				window_kind = excluded.window_kind, rolling_seconds = excluded.rolling_seconds,
				alert_permille = excluded.alert_permille, updated_at = now()
			RETURNING `+budgetColumns, b.OrgID, b.KeyID, b.EndUser, b.Limit, b.Window.Kind, secs, alerts))
		if err != nil {
			return err
		}
		return audit(ctx, tx, b.OrgID, a.actor, "budget.set", out.ID.String(), budgetDetails(out))
	})
	if err != nil {
		return Budget{}, fmt.Errorf("setting a budget of organization %s: %w", b.OrgID, budgetError(err))
	}
	return out, nil
}

func budgetError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23503" {
		if strings.Contains(pgErr.ConstraintName, "api_key") {
			return ErrNoKey
		}
		return ErrNoOrganization
	}
	return classify(err)
}

func budgetDetails(b Budget) map[string]any {
	d := map[string]any{"level": b.Level(), "limit_usd": b.Limit.String(), "window": b.Window.String(), "alert_at_permille": b.AlertAt}
	if b.KeyID != nil {
		d["api_key_id"] = b.KeyID.String()
	}
	if b.EndUser != nil {
		d["end_user"] = *b.EndUser
	}
	return d
}

// Budgets lists the budgets of org, or of every organization (org nil),
// by organization and scope.
func (a *Admin) Budgets(ctx context.Context, org *uuid.UUID) ([]Budget, error) {
	rows, err := a.pool.Query(ctx, `SELECT `+budgetColumns+` FROM budgets
		WHERE $1::uuid IS NULL OR organization_id = $1
		ORDER BY organization_id, api_key_id NULLS FIRST, end_user NULLS FIRST`, org)
	if err != nil {
		return nil, fmt.Errorf("listing budgets: %w", err)
	}
	bs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Budget, error) { return scanBudget(r) })
	if err != nil {
		return nil, fmt.Errorf("listing budgets: %w", err)
	}
	return bs, nil
}

// RemoveBudget deletes the budget of the scope (org, key, user), audited;
// ErrNotFound if there is none.
func (a *Admin) RemoveBudget(ctx context.Context, org uuid.UUID, key *uuid.UUID, user *string) (Budget, error) {
	var out Budget
	err := a.inTenant(ctx, org, func(tx pgx.Tx) error {
		var err error
		out, err = scanBudget(tx.QueryRow(ctx, `DELETE FROM budgets WHERE organization_id = $1
			AND api_key_id IS NOT DISTINCT FROM $2 AND end_user IS NOT DISTINCT FROM $3 RETURNING `+budgetColumns, org, key, user))
		if err != nil {
			return err
		}
		return audit(ctx, tx, org, a.actor, "budget.remove", out.ID.String(), budgetDetails(out))
	})
	if err != nil {
		return Budget{}, fmt.Errorf("removing a budget of organization %s: %w", org, budgetError(err))
	}
	return out, nil
}

// BudgetsFor returns org's budgets, read as the app role inside org's
// tenant context.
func (s *Store) BudgetsFor(ctx context.Context, org uuid.UUID) ([]Budget, error) {
	var out []Budget
	err := s.inTenantRead(ctx, org, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+budgetColumns+` FROM budgets WHERE organization_id = $1`, org)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Budget, error) { return scanBudget(r) })
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("reading budgets: %w", classify(err))
	}
	return out, nil
}

// BudgetSpend sums the cost of b's requests (its organization, and its
// key and end user where set) created in [since, until), from the
// request log: the source of truth the gateway's Redis counters are
// rebuilt from. Whole hours come from the rollups (usage_hourly, or
// usage_hourly_user for an end user), the partial hours at the ends from
// prompts, as Usage does; a key's end user has no rollup and sums
// prompts. Rows still in a writer's queue or spool are not counted yet.
func (s *Store) BudgetSpend(ctx context.Context, b Budget, since, until time.Time) (MicroUSD, error) {
	args := hourArgs(b.OrgID, since, until) // org, since, lo, hi, until
	var rollup, filter string
	switch {
	case b.KeyID != nil && b.EndUser != nil:
		args = append(args, *b.KeyID, *b.EndUser)
		filter = " AND api_key_id = $6 AND end_user = $7"
		args[2], args[3] = args[4], args[4] // no rollup: all of it from prompts
		args[1] = since
	case b.KeyID != nil:
		rollup, filter = "usage_hourly", " AND api_key_id = $6"
		args = append(args, *b.KeyID)
	case b.EndUser != nil:
		rollup, filter = "usage_hourly_user", " AND end_user = $6"
		args = append(args, *b.EndUser)
	default:
		rollup = "usage_hourly"
	}
	q := `SELECT coalesce(sum(cost_micros), 0)::bigint FROM prompts WHERE organization_id = $1 AND
		(created_at >= $2 AND created_at < $3 OR created_at >= $4 AND created_at < $5)` + filter
	if rollup != "" {
		q = `SELECT (` + q + `) + (SELECT coalesce(sum(cost_micros), 0)::bigint FROM ` + rollup + `
			WHERE organization_id = $1 AND hour >= $3 AND hour < $4` + filter + `)`
	}
	var spent MicroUSD
	err := s.inPlaceRead(ctx, b.OrgID, reportSettings, func(tx pgx.Tx, p Place) error {
		return tx.QueryRow(ctx, placeSQL(q, p), args...).Scan(&spent)
	})
	if err != nil {
		return 0, fmt.Errorf("summing a budget's spend: %w", classify(err))
	}
	return spent, nil
}

// ClaimBudgetAlert records that b's threshold permille was reached in the
// window that starts at windowStart, and reports whether this call
// recorded it: only the one that did announces it, so each threshold
// fires at most once per window, whichever replica sees it.
func (s *Store) ClaimBudgetAlert(ctx context.Context, org, budget uuid.UUID, windowStart time.Time, permille int) (bool, error) {
	var n int64
	err := s.InTenant(ctx, org, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO budget_alerts (organization_id, budget_id, window_start, permille)
			VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`, org, budget, windowStart, permille)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return false, fmt.Errorf("recording a budget alert: %w", classify(err))
	}
	return n == 1, nil
}
