package gateway

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/valyala/fasthttp"

	"github.com/bulkheadhq/bulkhead/store"
)

// promptReader is what the tenant read API needs from store.Store.
type promptReader interface {
	ListPrompts(ctx context.Context, org uuid.UUID, f store.PromptFilter) ([]store.Prompt, error)
	GetPrompt(ctx context.Context, org, id uuid.UUID) (store.Prompt, error)
	Usage(ctx context.Context, org uuid.UUID, since, until time.Time, groupBy string) ([]store.UsageRow, error)
}

var _ promptReader = (*store.Store)(nil)

// Read API limits.
const (
	defaultListLimit = 20
	maxListLimit     = 100
	readTimeoutAPI   = 10 * time.Second
	defaultUsageSpan = 30 * 24 * time.Hour
)

// logAPI serves the tenant's read API under /api/v1: the request log and
// usage of the organization the credential names, and nothing else.
func (s *Server) logAPI(rc *fasthttp.RequestCtx, path string) error {
	if s.prompts == nil {
		return errNotFound
	}
	if !rc.IsGet() {
		return errMethodNotAllowed
	}
	ctx, cancel := context.WithTimeout(s.base, readTimeoutAPI)
	defer cancel()
	p, err := s.authenticate(ctx, rc)
	if err != nil {
		return err
	}
	args := rc.QueryArgs()
	var out any
	switch {
	case path == "/api/v1/prompts":
		out, err = s.listPrompts(ctx, p.Org, args)
	case strings.HasPrefix(path, "/api/v1/prompts/"):
		id, perr := uuid.Parse(strings.TrimPrefix(path, "/api/v1/prompts/"))
		if perr != nil {
			return errPromptNotFound // a malformed id is as missing as another tenant's
		}
		var pr store.Prompt
		pr, err = s.prompts.GetPrompt(ctx, p.Org, id)
		if errors.Is(err, store.ErrNotFound) {
			return errPromptNotFound
		}
		out = pr
	case path == "/api/v1/usage":
		out, err = s.usage(ctx, p.Org, args)
	default:
		return errNotFound
	}
	if err != nil {
		return err
	}
	return writeJSON(rc, out)
}

// Bounds of every time the read API takes, after conversion to UTC: what
// both PostgreSQL and JSON (years 0000-9999) can carry, and any real log.
var (
	minAPITime = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	maxAPITime = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) // exclusive
)

// maxModelParam bounds the model filter, in bytes.
const maxModelParam = 256

// param returns the one value of a known query parameter ("" when absent
// or empty); the same parameter twice is ambiguous and refused.
func param(args *fasthttp.Args, name string) ([]byte, error) {
	if args.Len() == 0 {
		return nil, nil
	}
	if vs := args.PeekMulti(name); len(vs) > 1 {
		return nil, badParam(name, "given more than once")
	}
	return args.Peek(name), nil
}

func parseTime(args *fasthttp.Args, name string) (time.Time, error) {
	v, err := param(args, name)
	if err != nil || len(v) == 0 {
		return time.Time{}, err
	}
	t, err := time.Parse(time.RFC3339Nano, string(v))
	if err != nil {
		return time.Time{}, badParam(name, "want an RFC 3339 time such as 2026-01-02T15:04:05Z")
	}
	t = t.UTC()
	if t.Before(minAPITime) || !t.Before(maxAPITime) {
		return time.Time{}, badParam(name, "want a time from 1970 to 9999 (UTC)")
	}
	return t, nil
}

// parseListParams validates the query of GET /api/v1/prompts. Every error
// is a 400 naming its parameter; what it returns is safe for SQL and JSON.
// Parameters it does not know are ignored.
func parseListParams(args *fasthttp.Args) (store.PromptFilter, error) {
	var f store.PromptFilter
	var err error
	if f.Since, err = parseTime(args, "since"); err != nil {
		return f, err
	}
	if f.Until, err = parseTime(args, "until"); err != nil {
		return f, err
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return f, badParam("since", "must be before until")
	}
	m, err := param(args, "model")
	if err != nil {
		return f, err
	}
	switch {
	case len(m) > maxModelParam:
		return f, badParam("model", "longer than "+strconv.Itoa(maxModelParam)+" bytes")
	case !utf8.Valid(m) || bytes.IndexByte(m, 0) >= 0:
		return f, badParam("model", "want UTF-8 text without NUL")
	}
	f.Model = string(m)
	f.Limit = defaultListLimit
	l, err := param(args, "limit")
	if err != nil {
		return f, err
	}
	if len(l) > 0 {
		n, err := strconv.Atoi(string(l))
		if err != nil || n < 1 || n > maxListLimit {
			return f, badParam("limit", "want an integer from 1 to "+strconv.Itoa(maxListLimit))
		}
		f.Limit = n
	}
	c, err := param(args, "cursor")
	if err != nil {
		return f, err
	}
	if len(c) > 0 {
		cur, err := store.ParseCursor(string(c))
		if err != nil || cur.CreatedAt.Before(minAPITime) || !cur.CreatedAt.Before(maxAPITime) {
			return f, badParam("cursor", "not a cursor this API returned")
		}
		f.After = &cur
	}
	return f, nil
}

// usageParams are the validated query of GET /api/v1/usage.
type usageParams struct {
	since, until time.Time // UTC, since < until, both within the API's bounds
	groupBy      string
}

// parseUsageParams validates the query of GET /api/v1/usage: until
// defaults to now, since to defaultUsageSpan before until. Every error is a
// 400 naming its parameter.
func parseUsageParams(args *fasthttp.Args, now time.Time) (usageParams, error) {
	var u usageParams
	var err error
	if u.since, err = parseTime(args, "since"); err != nil {
		return u, err
	}
	if u.until, err = parseTime(args, "until"); err != nil {
		return u, err
	}
	if u.until.IsZero() {
		u.until = now.UTC()
	}
	if u.since.IsZero() {
		u.since = u.until.Add(-defaultUsageSpan)
		if u.since.Before(minAPITime) {
			u.since = minAPITime
		}
	}
	if !u.since.Before(u.until) {
		return u, badParam("since", "must be before until")
	}
	g, err := param(args, "group_by")
	if err != nil {
		return u, err
	}
	u.groupBy = string(g)
	if u.groupBy == "" {
		u.groupBy = "day"
	}
	if !store.ValidUsageGroup(u.groupBy) {
		return u, badParam("group_by", "want day, model, key or user")
	}
	return u, nil
}

func (s *Server) listPrompts(ctx context.Context, org uuid.UUID, args *fasthttp.Args) (any, error) {
	f, err := parseListParams(args)
	if err != nil {
		return nil, err
	}
	want := f.Limit
	f.Limit++ // one more tells whether there is a next page
	rows, err := s.prompts.ListPrompts(ctx, org, f)
	if err != nil {
		return nil, err
	}
	page := struct {
		Object     string         `json:"object"`
		Data       []store.Prompt `json:"data"`
		HasMore    bool           `json:"has_more"`
		NextCursor *string        `json:"next_cursor"`
	}{Object: "list", Data: rows}
	if len(rows) > want {
		page.Data, page.HasMore = rows[:want], true
		c := store.Cursor{CreatedAt: rows[want-1].CreatedAt, ID: rows[want-1].ID}.String()
		page.NextCursor = &c
	}
	if page.Data == nil {
		page.Data = []store.Prompt{}
	}
	return page, nil
}

func (s *Server) usage(ctx context.Context, org uuid.UUID, args *fasthttp.Args) (any, error) {
	u, err := parseUsageParams(args, time.Now())
	if err != nil {
		return nil, err
	}
	rows, err := s.prompts.Usage(ctx, org, u.since, u.until, u.groupBy)
	if err != nil {
		return nil, err
	}
	if rows == nil {
		rows = []store.UsageRow{}
	}
	return struct {
		Object  string           `json:"object"`
		GroupBy string           `json:"group_by"`
		Since   time.Time        `json:"since"`
		Until   time.Time        `json:"until"`
		Data    []store.UsageRow `json:"data"`
	}{"list", u.groupBy, u.since, u.until, rows}, nil
}

// ParsePromptQuery validates a request-log list query (since, until,
// model, limit, cursor) as GET /api/v1/prompts does, for the control
// plane's request-log browser. Every error is a 400 naming its parameter.
func ParsePromptQuery(args *fasthttp.Args) (store.PromptFilter, error) { return parseListParams(args) }

// ParseUsageQuery validates a usage query (since, until, group_by) as GET
// /api/v1/usage does: until defaults to now, since to 30 days before.
func ParseUsageQuery(args *fasthttp.Args, now time.Time) (since, until time.Time, groupBy string, err error) {
	u, err := parseUsageParams(args, now)
	return u.since, u.until, u.groupBy, err
}

// QueryParam returns the one value of a known query parameter, as the read
// API reads them: "" when absent, a 400 when given twice.
func QueryParam(args *fasthttp.Args, name string) ([]byte, error) { return param(args, name) }

// BadParam is the read API's 400 for an invalid query parameter.
func BadParam(name, msg string) *HTTPError { return badParam(name, msg) }
