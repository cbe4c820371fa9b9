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
	// EndUser: the caller's end user (JWT user_id, else the body's
	// "user"); null if none was given.
	EndUser *string `json:"end_user"`
	// CostUSD: what the request cost at the catalog's prices in force when
	// it was made (Prices), decimal text; null for a model the catalog
	// does not name (and rows older than costs).
	CostUSD *MicroUSD      `json:"cost_usd"`
	Prices  *PriceSnapshot `json:"prices"`
	// Error: the row's text is sealed and could not be decrypted (its
	// prompt and response are then null); nil otherwise.
	Error *RowError `json:"error,omitempty"`

	promptSealed, responseSealed []byte // the sealed text, until unseal
}

const promptColumns = `id, request_id, api_key_id, endpoint, model, prompt_text, response, prompt_tokens,
	completion_tokens, usage_tokens, usage_source, status, latency_ms, stream, created_at, upstream, attempts,
	cache_creation_tokens, cache_read_tokens, prompt_sealed, response_sealed, end_user, cost_micros,
	input_price_micros, cached_input_price_micros, output_price_micros`

func scanPrompt(row pgx.Row) (Prompt, error) {
	var p Prompt
	var in, cached, out *MicroUSD
	err := row.Scan(&p.ID, &p.RequestID, &p.APIKeyID, &p.Endpoint, &p.Model, &p.Prompt, &p.Response, &p.PromptTokens,
		&p.CompletionTokens, &p.TotalTokens, &p.UsageSource, &p.Status, &p.LatencyMS, &p.Stream, &p.CreatedAt,
		&p.Upstream, &p.Attempts, &p.CacheCreationTokens, &p.CacheReadTokens, &p.promptSealed, &p.responseSealed,
		&p.EndUser, &p.CostUSD, &in, &cached, &out)
	if in != nil && cached != nil && out != nil {
		p.Prices = &PriceSnapshot{Input: *in, CachedInput: *cached, Output: *out}
	}
	return p, err
}

// PriceSnapshot is the prices (per million tokens) a row's cost was
// computed with, as the read API shows them.
type PriceSnapshot struct {
	Input       MicroUSD `json:"input_usd_per_million"`
	CachedInput MicroUSD `json:"cached_input_usd_per_million"`
	Output      MicroUSD `json:"output_usd_per_million"`
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
