package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Prompt is one row of the request log as the tenant reads it.
type Prompt struct {
	ID               uuid.UUID  `json:"id"`
	RequestID        string     `json:"request_id"`
	APIKeyID         *uuid.UUID `json:"api_key_id"`
	Endpoint         string     `json:"endpoint"`
	Model            string     `json:"model"`
	Prompt           *string    `json:"prompt"`   // nil in metadata capture mode
	Response         *string    `json:"response"` // nil in metadata capture mode
	PromptTokens     int        `json:"prompt_tokens"`
	CompletionTokens int        `json:"completion_tokens"`
	TotalTokens      int        `json:"total_tokens"`
	UsageSource      string     `json:"usage_source"`
	Status           int        `json:"status"`
	LatencyMS        int        `json:"latency_ms"`
	Stream           bool       `json:"stream"`
	CreatedAt        time.Time  `json:"created_at"`
	Upstream         *string    `json:"upstream"` // the configured upstream that answered (else the last tried); null: none was
	Attempts         int        `json:"attempts"` // upstream attempts, fallbacks and retries included
	// Anthropic's prompt tokens written to and read from its prompt cache,
	// counted in prompt_tokens too; 0 for OpenAI's APIs.
	CacheCreationTokens int `json:"cache_creation_tokens"`
	CacheReadTokens     int `json:"cache_read_tokens"`
	// Error: the row's text is sealed and could not be decrypted (its
	// prompt and response are then null); nil otherwise.
	Error *RowError `json:"error,omitempty"`

	promptSealed, responseSealed []byte // the sealed text, until unseal
}

const promptColumns = `id, request_id, api_key_id, endpoint, model, prompt_text, response, prompt_tokens,
	completion_tokens, usage_tokens, usage_source, status, latency_ms, stream, created_at, upstream, attempts,
	cache_creation_tokens, cache_read_tokens, prompt_sealed, response_sealed`

func scanPrompt(row pgx.Row) (Prompt, error) {
	var p Prompt
	err := row.Scan(&p.ID, &p.RequestID, &p.APIKeyID, &p.Endpoint, &p.Model, &p.Prompt, &p.Response, &p.PromptTokens,
		&p.CompletionTokens, &p.TotalTokens, &p.UsageSource, &p.Status, &p.LatencyMS, &p.Stream, &p.CreatedAt,
		&p.Upstream, &p.Attempts, &p.CacheCreationTokens, &p.CacheReadTokens, &p.promptSealed, &p.responseSealed)
	return p, err
}

// Cursor is a position in the newest-first order (created_at, id).
type Cursor struct {
	CreatedAt time.Time
	ID        uuid.UUID
}

// String encodes the cursor for a URL ("unix-micros.uuid").
func (c Cursor) String() string {
	return strconv.FormatInt(c.CreatedAt.UnixMicro(), 10) + "." + c.ID.String()
}

// ParseCursor decodes Cursor.String.
func ParseCursor(s string) (Cursor, error) {
	ts, id, ok := strings.Cut(s, ".")
	micros, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil {
		return Cursor{}, fmt.Errorf("malformed cursor")
	}
	u, err := uuid.Parse(id)
	if err != nil {
		return Cursor{}, fmt.Errorf("malformed cursor")
	}
	return Cursor{CreatedAt: time.UnixMicro(micros), ID: u}, nil
}

// PromptFilter selects rows of ListPrompts. Zero fields do not filter.
type PromptFilter struct {
	Since, Until time.Time // created_at >= Since, < Until
	Model        string
	APIKeyID     *uuid.UUID // rows of this key only
	Status       int        // rows with this HTTP status only
	Limit        int        // rows to return; the caller caps it
	After        *Cursor    // continue after this row
}

// ListPrompts returns org's rows, newest first, with keyset pagination on
// (created_at, id). It runs inside org's tenant context and filters by
// organization in SQL as well: either alone keeps other tenants out.
func (s *Store) ListPrompts(ctx context.Context, org uuid.UUID, f PromptFilter) ([]Prompt, error) {
	return s.listPrompts(ctx, org, f, true)
}

func (s *Store) listPrompts(ctx context.Context, org uuid.UUID, f PromptFilter, orgFilter bool) ([]Prompt, error) {
	limit := max(f.Limit, 1)
	// The rows are searched newest first, in windows of time that grow
	// fourfold from a day: every query names its time range in constants,
	// so that it plans and locks only the day partitions of that range.
	// One query over all of them costs ~100 ms of planning with a year of
	// day partitions; a day's window, 0.3 ms. A busy tenant's page comes
	// from the first window.
	hi := f.Until // exclusive; zero: no upper bound
	if f.After != nil && (hi.IsZero() || f.After.CreatedAt.Before(hi)) {
		hi = f.After.CreatedAt.Add(time.Microsecond) // the keyset condition keeps the cursor's own row out
	}
	ref := hi
	if ref.IsZero() {
		ref = time.Now()
	}
	var out []Prompt
	var place Place
	err := s.inPlaceRead(ctx, org, forceCustomPlans, func(tx pgx.Tx, p Place) error {
		place = p
		span := 24 * time.Hour
		for {
			lo := ref.Add(-span)
			last := span > maxListWindow
			if last || (!f.Since.IsZero() && !lo.After(f.Since)) {
				lo, last = f.Since, true // zero: no lower bound
			}
			q, args := listQuery(org, f, orgFilter, lo, hi, limit-len(out))
			rows, err := tx.Query(ctx, placeSQL(q, p), args...)
			if err != nil {
				return err
			}
			out, err = pgx.AppendRows(out, rows, func(r pgx.CollectableRow) (Prompt, error) { return scanPrompt(r) })
			if err != nil || last || len(out) >= limit {
				if err == nil && p.Target == "" {
					err = s.unseal(ctx, tx, org, out)
				}
				return err
			}
			hi, ref, span = lo, lo, span*4
		}
	})
	if err == nil && place.Target != "" {
		err = s.unsealFromMain(ctx, org, out)
	}
	if err != nil {
		return nil, fmt.Errorf("listing prompts: %w", err)
	}
	return out, nil
}

// maxListWindow: past windows of 1, 4, 16, 64, 256 and 1024 days, the
// list's last query reads everything older.
const maxListWindow = 1024 * 24 * time.Hour

// listQuery is the query of one window [lo, hi) of listPrompts (a zero
// bound: none).
func listQuery(org uuid.UUID, f PromptFilter, orgFilter bool, lo, hi time.Time, limit int) (string, []any) {
	var where []string
	var args []any
	arg := func(v any) string { args = append(args, v); return "$" + strconv.Itoa(len(args)) }
	if orgFilter {
		where = append(where, "organization_id = "+arg(org))
	}
	if !lo.IsZero() {
		where = append(where, "created_at >= "+arg(lo))
	}
	if !hi.IsZero() {
		where = append(where, "created_at < "+arg(hi))
	}
	if f.Model != "" {
		where = append(where, "model = "+arg(f.Model))
	}
	if f.APIKeyID != nil {
		where = append(where, "api_key_id = "+arg(*f.APIKeyID))
	}
	if f.Status != 0 {
		where = append(where, "status = "+arg(f.Status))
	}
	if f.After != nil {
		where = append(where, "(created_at, id) < ("+arg(f.After.CreatedAt)+", "+arg(f.After.ID)+")")
	}
	q := "SELECT " + promptColumns + " FROM prompts"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	return q + " ORDER BY created_at DESC, id DESC LIMIT " + arg(limit), args
}

// GetPrompt returns one of org's rows. Another tenant's id is ErrNotFound,
// exactly like a missing one. The row is looked up in the primary key
// (organization_id, created_at, id) at the time its id carries
// (RowIDTime); an id that carries none names no row.
func (s *Store) GetPrompt(ctx context.Context, org, id uuid.UUID) (Prompt, error) {
	created, ok := RowIDTime(id)
	if !ok {
		return Prompt{}, fmt.Errorf("reading prompt: %w", ErrNotFound)
	}
	ps := make([]Prompt, 1)
	var place Place
	err := s.inPlaceRead(ctx, org, forceCustomPlans, func(tx pgx.Tx, pl Place) error {
		place = pl
		var err error
		ps[0], err = scanPrompt(tx.QueryRow(ctx, placeSQL("SELECT "+promptColumns+
			" FROM prompts WHERE organization_id = $1 AND created_at = $2 AND id = $3", pl), org, created, id))
		if err == nil && pl.Target == "" {
			err = s.unseal(ctx, tx, org, ps)
		}
		return err
	})
	if err == nil && place.Target != "" {
		err = s.unsealFromMain(ctx, org, ps)
	}
	p := ps[0]
	if err != nil {
		return Prompt{}, fmt.Errorf("reading prompt: %w", err)
	}
	return p, nil
}

// UsageRow is one group of a usage report.
type UsageRow struct {
	Group            string `json:"group"`
	Requests         int64  `json:"requests"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	TotalTokens      int64  `json:"total_tokens"`
}

// usageGroups maps group_by values to SQL: the expression rows are grouped
// by, over a column t (the row's time: created_at, or a rollup's hour) and
// the columns model and api_key_id, and the group's label, over the
// grouped value g. Grouping by a plain value and formatting only the
// groups costs a 30-day report by day a third less; the UTC day as a
// number of days since 1970 (float arithmetic) half as much again as
// date_trunc in a time zone (BenchmarkUsageFiveMillionRows). A fixed allowlist,
// never text from the request.
var usageGroups = map[string]struct{ by, label string }{
	"day":   {"floor(date_part('epoch', t) / 86400)::int", "to_char(to_timestamp(g * 86400) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"},
	"model": {"model", "g"},
	"key":   {"api_key_id", "coalesce(g::text, 'jwt')"},
}

// ValidUsageGroup reports whether Usage accepts groupBy.
func ValidUsageGroup(groupBy string) bool { _, ok := usageGroups[groupBy]; return ok }

// Usage sums org's requests and tokens in [since, until), grouped by day
// (UTC), model or key. Whole hours come from usage_hourly, which the
// writes keep (migration 00015): a 30-day report reads at most 720 rollup
// rows per model and key, whatever the tenant's traffic. Only the partial
// hours at either end of the window are summed from prompts, each a range
// of its primary key under one hour long.
func (s *Store) Usage(ctx context.Context, org uuid.UUID, since, until time.Time, groupBy string) ([]UsageRow, error) {
	q, ok := usageQuery(groupBy)
	if !ok {
		return nil, fmt.Errorf("usage: unknown grouping %q", groupBy)
	}
	var out []UsageRow
	err := s.inPlaceRead(ctx, org, reportSettings, func(tx pgx.Tx, p Place) error {
		rows, err := tx.Query(ctx, placeSQL(q, p), usageArgs(org, since, until)...)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, pgx.RowToStructByPos[UsageRow])
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	return out, nil
}

// SeriesRow is one (day, group) cell of a usage series: what the console
// plots.
type SeriesRow struct {
	Day              string `json:"day"` // YYYY-MM-DD, UTC
	Group            string `json:"group"`
	Requests         int64  `json:"requests"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	TotalTokens      int64  `json:"total_tokens"`
	Errors           int64  `json:"errors"` // status 400 and above
	LatencyP50MS     int64  `json:"latency_p50_ms"`
	LatencyP95MS     int64  `json:"latency_p95_ms"`
}

// seriesGroups are UsageSeries' second dimension: a fixed allowlist,
// never text from the request.
var seriesGroups = map[string]string{
	"model":  "model",
	"key":    "coalesce(api_key_id::text, 'jwt')",
	"status": "status::text",
}

// seriesQuery is UsageSeries' query grouped by by ($1 the organization,
// [$2, $3) the range).
func seriesQuery(by string) (string, bool) {
	expr, ok := seriesGroups[by]
	if !ok {
		return "", false
	}
	return `SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS d, ` + expr + ` AS g, count(*), coalesce(sum(prompt_tokens), 0),
		coalesce(sum(completion_tokens), 0), coalesce(sum(usage_tokens), 0), count(*) FILTER (WHERE status >= 400),
		coalesce(percentile_disc(0.5) WITHIN GROUP (ORDER BY latency_ms), 0)::bigint,
		coalesce(percentile_disc(0.95) WITHIN GROUP (ORDER BY latency_ms), 0)::bigint
		FROM prompts WHERE organization_id = $1 AND created_at >= $2 AND created_at < $3 GROUP BY d, g ORDER BY d, g`, true
}

// ValidSeriesGroup reports whether UsageSeries accepts by.
func ValidSeriesGroup(by string) bool { _, ok := seriesGroups[by]; return ok }

// UsageSeries is Usage by day and by a second dimension (model, key or
// status), with the errors and latency percentiles of each cell: the same
// scan of org's rows in [since, until) on the primary key
// (organization_id, created_at, id), within its tenant context.
func (s *Store) UsageSeries(ctx context.Context, org uuid.UUID, since, until time.Time, by string) ([]SeriesRow, error) {
	q, ok := seriesQuery(by)
	if !ok {
		return nil, fmt.Errorf("usage series: unknown grouping %q", by)
	}
	var out []SeriesRow
	err := s.inPlaceRead(ctx, org, forceCustomPlans, func(tx pgx.Tx, p Place) error {
		rows, err := tx.Query(ctx, placeSQL(q, p), org, since, until)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, pgx.RowToStructByPos[SeriesRow])
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("usage series: %w", err)
	}
	return out, nil
}

// usageQuery is Usage's statement for groupBy; its parameters are
// usageArgs.
func usageQuery(groupBy string) (string, bool) {
	grp, ok := usageGroups[groupBy]
	if !ok {
		return "", false
	}
	expr := grp.by
	return `SELECT ` + grp.label + ` AS label, sum(n)::bigint, sum(p)::bigint, sum(c)::bigint, sum(u)::bigint FROM (
		SELECT ` + expr + ` AS g, requests AS n, prompt_tokens AS p, completion_tokens AS c, usage_tokens AS u
		FROM (SELECT hour AS t, * FROM usage_hourly WHERE organization_id = $1 AND hour >= $3 AND hour < $4) r
		UNION ALL
		SELECT ` + expr + `, 1, prompt_tokens, completion_tokens, usage_tokens
		FROM (SELECT created_at AS t, * FROM prompts WHERE organization_id = $1 AND created_at >= $2 AND created_at < $3) a
		UNION ALL
		SELECT ` + expr + `, 1, prompt_tokens, completion_tokens, usage_tokens
		FROM (SELECT created_at AS t, * FROM prompts WHERE organization_id = $1 AND created_at >= $4 AND created_at < $5) b
	) x GROUP BY g ORDER BY label`, true
}

// usageArgs cuts [since, until) into [since, lo) + [lo, hi) + [hi, until),
// [lo, hi) the whole hours inside (empty if there are none), and returns
// usageQuery's parameters: org, since, lo, hi, until.
func usageArgs(org uuid.UUID, since, until time.Time) []any {
	lo, hi := since.Truncate(time.Hour), until.Truncate(time.Hour)
	if lo.Before(since) {
		lo = lo.Add(time.Hour)
	}
	if !lo.Before(hi) { // no whole hour inside: all of it from prompts
		lo, hi = until, until
	}
	return []any{org, since, lo, hi, until}
}
