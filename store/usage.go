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
// (UTC), model or key. Whole days come from usage_daily and the other
// whole hours from usage_hourly, which the writes keep (migrations 00015,
// 00018): a 30-day report reads at most 30 daily and 48 hourly rollup
// rows per model and key, whatever the tenant's traffic. Only the partial
// hours at either end of the window are summed from prompts, each a range
// of its primary key under one hour long.
func (s *Store) Usage(ctx context.Context, org uuid.UUID, since, until time.Time, groupBy string) ([]UsageRow, error) {
	q, ok := usageQuery(groupBy)
	if !ok {
		return nil, fmt.Errorf("usage: unknown grouping %q", groupBy)
	}
	var out []UsageRow
	err := s.inTenantReport(ctx, org, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, q, usageArgs(org, since, until)...)
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

// usageColumns are the sums of a usage report.
var usageColumns = []hourlyColumn{
	{"n", "requests", "1"},
	{"p", "prompt_tokens", "prompt_tokens"},
	{"c", "completion_tokens", "completion_tokens"},
	{"u", "usage_tokens", "usage_tokens"},
}

// usageQuery is Usage's statement for groupBy; its parameters are
// usageArgs.
func usageQuery(groupBy string) (string, bool) {
	grp, ok := usageGroups[groupBy]
	if !ok {
		return "", false
	}
	return `SELECT ` + grp.label + ` AS label, sum(n)::bigint, sum(p)::bigint, sum(c)::bigint, sum(u)::bigint FROM (` +
		hourlyUnion([]string{grp.by + " AS g"}, usageColumns) + `) x GROUP BY g ORDER BY label`, true
}

// hourlyColumn is one value summed by a report over hourlyUnion: named
// name, it is rollup in a usage_hourly or usage_daily row and row in a
// prompts row.
type hourlyColumn struct{ name, rollup, row string }

// hourlyUnion is the shape every report over the rollups shares: the
// rows of a window cut by usageArgs ($1 the organization, then the
// window's bounds $2 to $7), as the whole days' usage_daily rows, the
// whole hours' usage_hourly rows at either side of them, and the partial
// hours' prompts rows at either end, each with the columns groups
// (expressions over t, the row's day, hour or time, and the columns the
// tables share: model, api_key_id) and then cols. A prompts row also has
// lb, the latency bucket of its latency_ms (series.go).
func hourlyUnion(groups []string, cols []hourlyColumn) string {
	var head, rollup, row []string
	for _, g := range groups {
		head, rollup, row = append(head, g), append(rollup, g), append(row, g)
	}
	for _, c := range cols {
		head, rollup, row = append(head, c.rollup+" AS "+c.name), append(rollup, c.rollup), append(row, c.row)
	}
	raw := func(lo, hi string) string {
		return `SELECT ` + strings.Join(row, ", ") + `
		FROM (SELECT created_at AS t, ` + latencyBucketSQL + ` AS lb, * FROM prompts WHERE organization_id = $1 AND created_at >= ` + lo + ` AND created_at < ` + hi + `) x`
	}
	rolled := func(table, col, lo, hi string) string {
		return `SELECT ` + strings.Join(rollup, ", ") + `
		FROM (SELECT ` + col + ` AS t, * FROM ` + table + ` WHERE organization_id = $1 AND ` + col + ` >= ` + lo + ` AND ` + col + ` < ` + hi + `) x`
	}
	return `
		SELECT ` + strings.Join(head, ", ") + `
		FROM (SELECT day AS t, * FROM usage_daily WHERE organization_id = $1 AND day >= $4 AND day < $5) d
		UNION ALL ` + rolled("usage_hourly", "hour", "$3", "$4") + `
		UNION ALL ` + rolled("usage_hourly", "hour", "$5", "$6") + `
		UNION ALL ` + raw("$2", "$3") + `
		UNION ALL ` + raw("$6", "$7") + `
	`
}

// usageArgs cuts [since, until) into [since, h1) + [h1, d1) + [d1, d2) +
// [d2, h2) + [h2, until): [h1, h2) the whole hours inside (empty if there
// are none), [d1, d2) the whole UTC days inside those (empty if there are
// none). It returns hourlyUnion's parameters: org, since, h1, d1, d2, h2,
// until.
func usageArgs(org uuid.UUID, since, until time.Time) []any {
	h1, h2 := since.Truncate(time.Hour), until.Truncate(time.Hour)
	if h1.Before(since) {
		h1 = h1.Add(time.Hour)
	}
	if !h1.Before(h2) { // no whole hour inside: all of it from prompts
		h1, h2 = until, until
	}
	const day = 24 * time.Hour
	d1, d2 := h1.UTC().Truncate(day), h2.UTC().Truncate(day) // Truncate counts from year 1: UTC days
	if d1.Before(h1) {
		d1 = d1.Add(day)
	}
	if !d1.Before(d2) { // no whole day inside: all of [h1, h2) from usage_hourly
		d1, d2 = h2, h2
	}
	return []any{org, since, h1, d1, d2, h2, until}
}

// latencyBounds are the lower bounds, in ms, of the latency buckets 1 to
// 30 (bucket 0: below 1 ms): those of usage_latency_histogram (migration
// 00018), which the rollups count by. Roughly 1.5× apart, 1 ms to 5 min.
var latencyBounds = []int64{1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700,
	1000, 1500, 2000, 3000, 5000, 7000, 10000, 15000, 20000, 30000, 60000, 120000, 300000}

// latencyBucketSQL is a prompts row's latency bucket, as
// usage_latency_histogram counts it.
var latencyBucketSQL = func() string {
	b := make([]string, len(latencyBounds))
	for i, v := range latencyBounds {
		b[i] = strconv.FormatInt(v, 10)
	}
	return "width_bucket(greatest(latency_ms, 0), '{" + strings.Join(b, ",") + "}'::integer[])"
}()
