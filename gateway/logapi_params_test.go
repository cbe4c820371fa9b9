package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
)

// Query strings an outside test answered with 500 (a time JSON cannot
// carry; bytes PostgreSQL text refuses), and their neighbours.
var readAPIBadQueries = []struct{ path, param string }{
	{"/api/v1/usage?until=0000-01-01T00:00:01Z", "until"},
	{"/api/v1/usage?until=9999-12-31T23:59:59-23:59", "until"},
	{"/api/v1/prompts?model=%ff", "model"},
	{"/api/v1/prompts?model=a%00b", "model"},
	{"/api/v1/usage?since=1969-12-31T23:59:59Z", "since"},
	{"/api/v1/prompts?since=0001-01-01T00:00:00Z", "since"},
	{"/api/v1/prompts?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "since"},
	{"/api/v1/prompts?cursor=9223372036854775807." + "00000000-0000-0000-0000-000000000000", "cursor"},
	{"/api/v1/prompts?cursor=-9223372036854775808." + "00000000-0000-0000-0000-000000000000", "cursor"},
	{"/api/v1/prompts?limit=1&limit=100", "limit"},
	{"/api/v1/usage?group_by=day&group_by=model", "group_by"},
}

// The read API answers every malformed parameter with a 400 that names
// it, against the real server and PostgreSQL.
func TestReadAPIRefusesOutOfRangeParams(t *testing.T) {
	h := newHarness(t, nil)
	_, key, _ := h.tenant(1000)
	for _, tc := range readAPIBadQueries {
		r := h.do("GET", tc.path, "", bearer(key)...)
		var e struct{ Error struct{ Param *string } }
		json.Unmarshal(r.body, &e) //nolint:errcheck // checked below
		if r.status != 400 || e.Error.Param == nil || *e.Error.Param != tc.param {
			t.Errorf("%s: %d %s, want 400 naming %s", tc.path, r.status, r.body, tc.param)
		}
	}
	// The edges of the range are served.
	for _, path := range []string{
		"/api/v1/usage?since=1970-01-01T00:00:00Z&until=9999-12-31T23:59:59.999999Z",
		"/api/v1/usage?until=1970-01-02T00:00:00Z",
		"/api/v1/prompts?model=%C3%A9t%C3%A9&since=1970-01-01T00:00:00Z",
	} {
		if r := h.do("GET", path, "", bearer(key)...); r.status != 200 {
			t.Errorf("%s: %d %s", path, r.status, r.body)
		}
	}
}

// FuzzReadAPIParams: whatever the query string, the read API's parameter
// parsing either refuses it with a 400 naming a parameter or yields values
// PostgreSQL and JSON both take: never a path to a 5xx.
func FuzzReadAPIParams(f *testing.F) {
	for _, tc := range readAPIBadQueries {
		_, q, _ := strings.Cut(tc.path, "?")
		f.Add(q)
	}
	for _, q := range []string{
		"", "limit=20", "limit=0", "limit=+7", "limit=99999999999999999999", "group_by=model", "group_by=organization_id;DROP",
		"since=2026-01-02T15:04:05.999999999%2B14:00", "until=2026-01-02T15:04:05Z&since=2026-01-01T00:00:00Z",
		"model=m1'%20OR%201=1--", "model=" + strings.Repeat("x", 257), "cursor=garbage", "cursor=1767225600000000.0f6b1d6e-6f5c-4a36-9e54-2c1f8b2c0f1a",
		"org=x&organization_id=y", "model=%ed%a0%80", "since=%00", "until=2026-13-01T00:00:00Z",
	} {
		f.Add(q)
	}
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, q string) {
		var args fasthttp.Args
		args.Parse(q)
		inRange := func(what string, tm time.Time) {
			if tm.Location() != time.UTC || tm.Year() < 1970 || tm.Year() > 9999 {
				t.Fatalf("%q: %s %v out of range", q, what, tm)
			}
			if _, err := json.Marshal(tm); err != nil {
				t.Fatalf("%q: %s does not marshal: %v", q, what, err)
			}
		}
		refused := func(err error) {
			var he *HTTPError
			if !errors.As(err, &he) || he.Code != 400 || he.Param == "" || he.Type != "invalid_request_error" {
				t.Fatalf("%q: refused with %#v, want a 400 naming a parameter", q, err)
			}
		}

		if lf, err := parseListParams(&args); err != nil {
			refused(err)
		} else {
			for what, tm := range map[string]time.Time{"since": lf.Since, "until": lf.Until} {
				if !tm.IsZero() {
					inRange(what, tm)
				}
			}
			if !lf.Since.IsZero() && !lf.Until.IsZero() && !lf.Since.Before(lf.Until) {
				t.Fatalf("%q: since %v not before until %v", q, lf.Since, lf.Until)
			}
			m := []byte(lf.Model)
			if len(m) > maxModelParam || !utf8.Valid(m) || bytes.IndexByte(m, 0) >= 0 {
				t.Fatalf("%q: model %q reaches SQL", q, lf.Model)
			}
			if lf.Limit < 1 || lf.Limit > maxListLimit {
				t.Fatalf("%q: limit %d", q, lf.Limit)
			}
			if lf.After != nil {
				inRange("cursor", lf.After.CreatedAt.UTC())
			}
		}

		if u, err := parseUsageParams(&args, now); err != nil {
			refused(err)
		} else {
			inRange("since", u.since)
			inRange("until", u.until)
			if !u.since.Before(u.until) {
				t.Fatalf("%q: since %v not before until %v", q, u.since, u.until)
			}
			if u.groupBy != "day" && u.groupBy != "model" && u.groupBy != "key" {
				t.Fatalf("%q: group_by %q", q, u.groupBy)
			}
		}
	})
}
