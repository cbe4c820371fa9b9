package control

import (
	"bytes"
	"errors"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/gateway"
	"github.com/bulkheadhq/bulkhead/store"
)

// The usage and request-log endpoints read through the tenant read API's
// store functions (store/prompts.go: Usage, UsageSeries, ListPrompts,
// GetPrompt), as the app role inside the organization's context; the
// organization is first read through the caller's actions, so a tenant
// administrator reaches only its own. Usage and series read the hourly
// rollups (usage_hourly) and only the partial hours at the ends of the
// range from the request log.

type usageReport struct {
	Object  string           `json:"object"`
	GroupBy string           `json:"group_by"`
	Since   time.Time        `json:"since"`
	Until   time.Time        `json:"until"`
	Data    []store.UsageRow `json:"data"`
}

type seriesReport struct {
	Object string            `json:"object"`
	By     string            `json:"by"`
	Since  time.Time         `json:"since"`
	Until  time.Time         `json:"until"`
	Data   []store.SeriesRow `json:"data"`
}

type orgUsageReport struct {
	Object string           `json:"object"`
	Since  time.Time        `json:"since"`
	Until  time.Time        `json:"until"`
	Data   []store.OrgUsage `json:"data"`
}

type promptList struct {
	Object     string         `json:"object"`
	Data       []store.Prompt `json:"data"`
	HasMore    bool           `json:"has_more"`
	NextCursor *string        `json:"next_cursor"`
}

// maxSeriesSpan bounds a series' range: what the console plots.
const maxSeriesSpan = 400 * 24 * time.Hour

// scopedOrg reads the path's organization through the caller's actions.
func (s *Server) scopedOrg(c *call) (uuid.UUID, error) {
	id, err := c.id("id", errOrgNotFound)
	if err != nil {
		return uuid.Nil, err
	}
	o, err := s.org(c, id)
	return o.ID, err
}

func (s *Server) orgUsage(c *call) (any, error) {
	since, until, groupBy, err := gateway.ParseUsageQuery(c.rc.QueryArgs(), time.Now())
	if err != nil {
		return nil, err
	}
	org, err := s.scopedOrg(c)
	if err != nil {
		return nil, err
	}
	rows, err := s.opts.Store.Usage(c.ctx, org, since, until, groupBy)
	if rows == nil {
		rows = []store.UsageRow{}
	}
	return usageReport{"list", groupBy, since, until, rows}, err
}

func (s *Server) orgSeries(c *call) (any, error) {
	args := c.rc.QueryArgs()
	since, until, _, err := gateway.ParseUsageQuery(args, time.Now())
	if err != nil {
		return nil, err
	}
	if until.Sub(since) > maxSeriesSpan {
		return nil, gateway.BadParam("since", "a series spans at most 400 days")
	}
	by, err := gateway.QueryParam(args, "by")
	if err != nil {
		return nil, err
	}
	if len(by) == 0 {
		by = []byte("model")
	}
	if !store.ValidSeriesGroup(string(by)) {
		return nil, gateway.BadParam("by", "want model, key or status")
	}
	org, err := s.scopedOrg(c)
	if err != nil {
		return nil, err
	}
	rows, err := s.opts.Store.UsageSeries(c.ctx, org, since, until, string(by))
	if rows == nil {
		rows = []store.SeriesRow{}
	}
	return seriesReport{"list", string(by), since, until, rows}, err
}

func (s *Server) usageByOrg(c *call) (any, error) {
	since, until, _, err := gateway.ParseUsageQuery(c.rc.QueryArgs(), time.Now())
	if err != nil {
		return nil, err
	}
	rows, err := s.opts.Admin.UsageByOrg(c.ctx, since, until)
	if errors.Is(err, store.ErrUnknownTarget) {
		return nil, errUsageTargetUnknown
	}
	if rows == nil {
		rows = []store.OrgUsage{}
	}
	return orgUsageReport{"list", since, until, rows}, err
}

func (s *Server) listPrompts(c *call) (any, error) {
	args := c.rc.QueryArgs()
	f, err := gateway.ParsePromptQuery(args)
	if err != nil {
		return nil, err
	}
	if k, err := gateway.QueryParam(args, "key"); err != nil {
		return nil, err
	} else if len(k) > 0 {
		id, err := uuid.Parse(string(k))
		if err != nil || len(k) != 36 {
			return nil, gateway.BadParam("key", "want a key id (a UUID)")
		}
		f.APIKeyID = &id
	}
	if st, err := gateway.QueryParam(args, "status"); err != nil {
		return nil, err
	} else if len(st) > 0 {
		n, err := strconv.Atoi(string(st))
		if err != nil || n < 100 || n > 599 || bytes.HasPrefix(st, []byte("+")) {
			return nil, gateway.BadParam("status", "want an HTTP status from 100 to 599")
		}
		f.Status = n
	}
	org, err := s.scopedOrg(c)
	if err != nil {
		return nil, err
	}
	want := f.Limit
	f.Limit++ // one more tells whether there is a next page
	rows, err := s.opts.Store.ListPrompts(c.ctx, org, f)
	if err != nil {
		return nil, err
	}
	out := promptList{Object: "list", Data: rows}
	if len(rows) > want {
		out.Data, out.HasMore = rows[:want], true
		cur := store.Cursor{CreatedAt: rows[want-1].CreatedAt, ID: rows[want-1].ID}.String()
		out.NextCursor = &cur
	}
	if out.Data == nil {
		out.Data = []store.Prompt{}
	}
	return out, nil
}

func (s *Server) getPrompt(c *call) (any, error) {
	org, err := s.scopedOrg(c)
	if err != nil {
		return nil, err
	}
	pid, err := c.id("prompt", errPromptNotFound)
	if err != nil {
		return nil, err
	}
	p, err := s.opts.Store.GetPrompt(c.ctx, org, pid)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errPromptNotFound
	}
	return p, err
}
