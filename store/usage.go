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
	// CostUSD sums the group's priced requests (decimal text); null when
	// none was priced (models the catalog does not name have no cost).
	CostUSD *MicroUSD `json:"cost_usd"`
}

// usageGroups maps group_by values to SQL: the expression rows are grouped
// by, over a column t (the row's time: created_at, or a rollup's hour) and
// the columns model and api_key_id, and the group's label, over the
// grouped value g. Grouping by a plain value and formatting only the
// groups costs a 30-day report by day a third less; the UTC day as a
// number of days since 1970 (float arithmetic) half as much again as
// date_trunc in a time zone (BenchmarkUsageFiveMillionRows). A fixed allowlist,
// never text from the request.
//
// rollup is the hourly table the whole hours come from: end users have
// their own (usage_hourly_user, data-plane migration 00002), so that many
// end users do not multiply the rows of every other report. Rows without
// an end user form the group "".
var usageGroups = map[string]struct{ by, label, rollup string }{
	"day":   {"floor(date_part('epoch', t) / 86400)::int", "to_char(to_timestamp(g * 86400) AT TIME ZONE 'UTC', 'YYYY-MM-DD')", "usage_hourly"},
	"model": {"model", "g", "usage_hourly"},
	"key":   {"api_key_id", "coalesce(g::text, 'jwt')", "usage_hourly"},
	"user":  {"end_user", "coalesce(g, '')", "usage_hourly_user"},
}

// ValidUsageGroup reports whether Usage accepts groupBy.
func ValidUsageGroup(groupBy string) bool { _, ok := usageGroups[groupBy]; return ok }

// Usage sums org's requests, tokens and cost in [since, until), grouped
// by day (UTC), model, key or end user. Whole hours come from usage_hourly, which the
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

// usageColumns are the sums of a usage report.
var usageColumns = []hourlyColumn{
	{"n", "requests", "1"},
	{"p", "prompt_tokens", "prompt_tokens"},
	{"c", "completion_tokens", "completion_tokens"},
	{"u", "usage_tokens", "usage_tokens"},
	{"m", "cost_micros", "cost_micros"},
}

// usageQuery is Usage's statement for groupBy; its parameters are
// usageArgs.
func usageQuery(groupBy string) (string, bool) {
	grp, ok := usageGroups[groupBy]
	if !ok {
		return "", false
	}
	return `SELECT ` + grp.label + ` AS label, sum(n)::bigint, sum(p)::bigint, sum(c)::bigint, sum(u)::bigint, sum(m)::bigint FROM (` +
		hourlyUnion(grp.rollup, []string{grp.by + " AS g"}, usageColumns) + `) x GROUP BY g ORDER BY label`, true
}

// hourlyColumn is one value summed by a report over hourlyUnion: named
// name, it is rollup in a usage_hourly row and row in a prompts row.
type hourlyColumn struct{ name, rollup, row string }

// hourlyUnion is the shape every report over the rollups shares: the
// rows of a window cut by usageArgs ($1 the organization, [$2, $3) and
// [$4, $5) the partial hours at its ends, [$3, $4) its whole hours), as
// the whole hours' rows of table (usage_hourly, or usage_hourly_user) and
// the partial hours' prompts rows,
// each with the columns groups (expressions over t, the row's hour or
// time, and the columns the two tables share: model, api_key_id) and
// then cols. A prompts row also has lb, the latency bucket of its
// latency_ms (series.go).
func hourlyUnion(table string, groups []string, cols []hourlyColumn) string {
	var head, rollup, row []string
	for _, g := range groups {
		head, rollup, row = append(head, g), append(rollup, g), append(row, g)
	}
	for _, c := range cols {
		head, rollup, row = append(head, c.rollup+" AS "+c.name), append(rollup, c.rollup), append(row, c.row)
	}
	rows := `FROM (SELECT created_at AS t, ` + latencyBucketSQL + ` AS lb, * FROM prompts WHERE organization_id = $1 AND created_at >= `
	return `
		SELECT ` + strings.Join(head, ", ") + `
		FROM (SELECT hour AS t, * FROM ` + table + ` WHERE organization_id = $1 AND hour >= $3 AND hour < $4) r
		UNION ALL
		SELECT ` + strings.Join(row, ", ") + `
		` + rows + `$2 AND created_at < $3) a
		UNION ALL
		SELECT ` + strings.Join(row, ", ") + `
		` + rows + `$4 AND created_at < $5) b
	`
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

// latencyBounds are the lower bounds, in ms, of the latency buckets 1 to
// 30 (bucket 0: below 1 ms): those of usage_latency_histogram (data-plane
// migration 00003), which the rollups count by. Roughly 1.5× apart, 1 ms
// to 5 min.
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
