package gateway

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

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

var errPromptNotFound = &HTTPError{Code: fasthttp.StatusNotFound, Type: "invalid_request_error", ErrCode: "not_found",
	Msg: "No such prompt."}

func badParam(param, msg string) *HTTPError {
	return &HTTPError{Code: fasthttp.StatusBadRequest, Type: "invalid_request_error", ErrCode: "invalid_parameter", Param: param,
		Msg: "Invalid '" + param + "': " + msg}
}

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

func parseTime(args *fasthttp.Args, name string) (time.Time, error) {
	v := args.Peek(name)
	if len(v) == 0 {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, string(v))
	if err != nil {
		return time.Time{}, badParam(name, "want an RFC 3339 time such as 2026-01-02T15:04:05Z")
	}
	return t, nil
}

func (s *Server) listPrompts(ctx context.Context, org uuid.UUID, args *fasthttp.Args) (any, error) {
	var f store.PromptFilter
	var err error
	if f.Since, err = parseTime(args, "since"); err != nil {
		return nil, err
	}
	if f.Until, err = parseTime(args, "until"); err != nil {
		return nil, err
	}
	if m := args.Peek("model"); len(m) > 0 {
		if len(m) > 256 {
			return nil, badParam("model", "longer than 256 bytes")
		}
		f.Model = string(m)
	}
	f.Limit = defaultListLimit
	if l := args.Peek("limit"); len(l) > 0 {
		n, err := strconv.Atoi(string(l))
		if err != nil || n < 1 || n > maxListLimit {
			return nil, badParam("limit", "want an integer from 1 to "+strconv.Itoa(maxListLimit))
		}
		f.Limit = n
	}
	if c := args.Peek("cursor"); len(c) > 0 {
		cur, err := store.ParseCursor(string(c))
		if err != nil {
			return nil, badParam("cursor", "not a cursor this API returned")
		}
		f.After = &cur
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
	since, err := parseTime(args, "since")
	if err != nil {
		return nil, err
	}
	until, err := parseTime(args, "until")
	if err != nil {
		return nil, err
	}
	if until.IsZero() {
		until = time.Now()
	}
	if since.IsZero() {
		since = until.Add(-defaultUsageSpan)
	}
	if !since.Before(until) {
		return nil, badParam("since", "must be before until")
	}
	groupBy := string(args.Peek("group_by"))
	if groupBy == "" {
		groupBy = "day"
	}
	if !store.ValidUsageGroup(groupBy) {
		return nil, badParam("group_by", "want day, model or key")
	}
	rows, err := s.prompts.Usage(ctx, org, since, until, groupBy)
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
	}{"list", groupBy, since.UTC(), until.UTC(), rows}, nil
}
