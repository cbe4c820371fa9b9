package store

import (
	"context"
	"fmt"
	"slices"
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
// rollups are where the whole hours and days come from: end users have
// rollups of their own (usage_hourly_user and usage_daily_user, data-plane
// migrations 00002 and 00004), so that many end users do not multiply the
// rows of every other report. Rows without an end user form the group "";
// the end users' rollups leave them out (most statements of the writer
// then skip that upsert), and usageQuery counts the group's whole hours
// and days as the total less the end users'.
var usageGroups = map[string]struct {
	by, label string
	rollups   rollups
}{
	"day":   {"floor(date_part('epoch', t) / 86400)::int", "to_char(to_timestamp(g * 86400) AT TIME ZONE 'UTC', 'YYYY-MM-DD')", byModelAndKey},
	"model": {"model", "g", byModelAndKey},
	"key":   {"api_key_id", "coalesce(g::text, 'jwt')", byModelAndKey},
	"user":  {"end_user", "coalesce(g, '')", byUser},
}

// rollups names the tables a report's whole hours and whole days come
// from.
type rollups struct{ hourly, daily string }

var (
	byModelAndKey = rollups{hourly: "usage_hourly", daily: "usage_daily"}
	byUser        = rollups{hourly: "usage_hourly_user", daily: "usage_daily_user"}
)

// ValidUsageGroup reports whether Usage accepts groupBy.
func ValidUsageGroup(groupBy string) bool { _, ok := usageGroups[groupBy]; return ok }

// Usage sums org's requests, tokens and cost in [since, until), grouped
// by day (UTC), model, key or end user. Whole days come from usage_daily (up
// to the last day rolled up) and the other whole hours from usage_hourly
// (migration 00015, data-plane 00003 and 00004): a 30-day report reads at most 30 daily and 48 hourly rollup
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
		args, err := reportArgs(ctx, tx, p, org, since, until, groupBy)
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, placeSQL(q, p), args...)
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
	if grp.rollups == byUser {
		return userUsageQuery, true
	}
	return `SELECT ` + grp.label + ` AS label, sum(n)::bigint, sum(p)::bigint, sum(c)::bigint, sum(u)::bigint, sum(m)::bigint FROM (` +
		hourlyUnion(grp.rollups, []string{grp.by + " AS g"}, usageColumns) + `) x GROUP BY g ORDER BY label`, true
}

// userUsageQuery is Usage by end user. The group "" (g NULL: rows
// without an end user, whom the end users' rollups leave out) has its
// partial hours from prompts with the others', and its whole hours and
// days as the total's (the NULL row of the second part) less the end
// users' whole hours and days (each group's w columns, summed over the
// groups by a window): the end users' rollups are read once.
var userUsageQuery = func() string {
	cols := slices.Clone(usageColumns)
	totals := slices.Clone(usageColumns)
	var sums, outer []string
	for _, c := range usageColumns {
		zero := "0"
		if c.name == "m" {
			zero = "NULL::bigint" // no cost is not a zero one
		}
		cols = append(cols, hourlyColumn{"w" + c.name, c.rollup, zero})
		totals = append(totals, hourlyColumn{"w" + c.name, zero, zero})
		sums = append(sums, "sum("+c.name+") AS "+c.name, "sum(w"+c.name+") AS w"+c.name)
		outer = append(outer, "("+c.name+" - CASE WHEN g IS NULL THEN coalesce(sum(w"+c.name+") FILTER (WHERE g IS NOT NULL) OVER (), 0) ELSE 0 END)::bigint AS "+c.name)
	}
	return `SELECT label, n, p, c, u, m FROM (
		SELECT coalesce(g, '') AS label, ` + strings.Join(outer, ", ") + ` FROM (
			SELECT g, ` + strings.Join(sums, ", ") + ` FROM (` +
		userUnion(cols) + `
			UNION ALL ` + wholeUnion(byModelAndKey, []string{"NULL::text AS g"}, totals) + `
			) x GROUP BY g) y) z
		WHERE n > 0 ORDER BY label`
}()

// hourlyColumn is one value summed by a report over hourlyUnion: named
// name, it is rollup in a usage_hourly or usage_daily row and row in a
// prompts row.
type hourlyColumn struct{ name, rollup, row string }

// hourlyUnion is the shape every report over the rollups shares: the
// rows of a window cut by usageArgs ($1 the organization, then the
// window's bounds $2 to $7), as the whole periods' rows (wholeUnion) and
// the partial hours' prompts rows at either end, each with the columns
// groups (expressions over t, the row's day, hour or time, and the
// columns the tables share: model, api_key_id) and then cols. A prompts
// row also has lb, the latency bucket of its latency_ms (series.go).
func hourlyUnion(from rollups, groups []string, cols []hourlyColumn) string {
	return `
		` + wholeUnion(from, groups, cols) + rawHours(groups, cols)
}

// rawHours is hourlyUnion's prompts rows of the partial hours at either
// end, each part led by UNION ALL.
func rawHours(groups []string, cols []hourlyColumn) string {
	row := slices.Clone(groups)
	for _, c := range cols {
		row = append(row, c.row)
	}
	raw := func(lo, hi string) string {
		return `SELECT ` + strings.Join(row, ", ") + `
		FROM (SELECT created_at AS t, ` + latencyBucketSQL + ` AS lb, * FROM prompts WHERE organization_id = $1 AND created_at >= ` + lo + ` AND created_at < ` + hi + `) x`
	}
	return `
		UNION ALL ` + raw("$2", "$3") + `
		UNION ALL ` + raw("$6", "$7") + `
	`
}

// dailyThrough is the end of the days the daily rollups hold (data-plane
// migration 00004): usage_roll_days adds each day once it is over;
// the days from it on are read from the hourly ones.
const dailyThrough = `(SELECT daily_through FROM usage_rollup_state)`

// wholeUnion is hourlyUnion's rows of the whole hours and days: the
// whole days [$4, $5) from from.daily up to dailyThrough and from
// from.hourly after it, and the whole hours [$3, $4) and [$5, $6) from from.hourly; the
// first SELECT names the columns.
func wholeUnion(from rollups, groups []string, cols []hourlyColumn) string {
	head, rollup := slices.Clone(groups), slices.Clone(groups)
	for _, c := range cols {
		head, rollup = append(head, c.rollup+" AS "+c.name), append(rollup, c.rollup)
	}
	rolled := func(cols []string, table, col, lo, hi string) string {
		return `SELECT ` + strings.Join(cols, ", ") + `
		FROM (SELECT ` + col + ` AS t, * FROM ` + table + ` WHERE organization_id = $1 AND ` + col + ` >= ` + lo + ` AND ` + col + ` < ` + hi + `) x`
	}
	return rolled(head, from.daily, "day", "$4", "least($5, "+dailyThrough+")") + `
		UNION ALL ` + rolled(rollup, from.hourly, "hour", "greatest($4, "+dailyThrough+")", "$5") + `
		UNION ALL ` + rolled(rollup, from.hourly, "hour", "$3", "$4") + `
		UNION ALL ` + rolled(rollup, from.hourly, "hour", "$5", "$6")
}

// usageArgs cuts [since, until) into [since, h1) + [h1, d1) + [d1, d2) +
// [d2, h2) + [h2, until): [h1, h2) the whole hours inside (empty if there
// are none), [d1, d2) the whole UTC days inside those (empty if there are
// none). It returns hourlyUnion's parameters: org, since, h1, d1, d2, h2,
// until.
func usageArgs(org uuid.UUID, since, until time.Time) []any {
	h1, h2 := wholeHours(since, until)
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

// wholeHours are the first and the end of the whole hours inside [since,
// until): both until when there is none.
func wholeHours(since, until time.Time) (h1, h2 time.Time) {
	h1, h2 = since.Truncate(time.Hour), until.Truncate(time.Hour)
	if h1.Before(since) {
		h1 = h1.Add(time.Hour)
	}
	if !h1.Before(h2) { // no whole hour inside: all of it from prompts
		h1, h2 = until, until
	}
	return h1, h2
}

// hourArgs are the parameters of a sum over the hourly rollups and the
// partial hours: org, since, the whole hours' [lo, hi), until.
func hourArgs(org uuid.UUID, since, until time.Time) []any {
	lo, hi := wholeHours(since, until)
	return []any{org, since, lo, hi, until}
}

// latencyBounds are the lower bounds, in ms, of the latency buckets 1 to
// 30 (bucket 0: below 1 ms): those of usage_latency_histogram (migration
// data-plane 00003), which the rollups count by. Roughly 1.5× apart, 1 ms to 5 min.
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
