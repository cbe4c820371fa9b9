package store

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// SeriesRow is one (day, group) cell of a usage series: what the console
// plots.
type SeriesRow struct {
	Day              string `json:"day"` // YYYY-MM-DD, UTC
	Group            string `json:"group"`
	Requests         int64  `json:"requests"`
	PromptTokens     int64  `json:"prompt_tokens"`     // 0 in a series by status
	CompletionTokens int64  `json:"completion_tokens"` // 0 in a series by status
	TotalTokens      int64  `json:"total_tokens"`      // 0 in a series by status
	Errors           int64  `json:"errors"`            // status 400 and above
	// CostUSD sums the cell's priced requests (decimal text); null when
	// none was priced, and in a series by status.
	CostUSD *MicroUSD `json:"cost_usd"`
	// The latency percentiles of the cell's requests (of all the day's
	// requests in a series by status), to the upper bound of their
	// latency bucket (latencyBounds: about 1.5× apart, so within 50%
	// above the exact value); 0 without requests.
	LatencyP50MS int64 `json:"latency_p50_ms"`
	LatencyP95MS int64 `json:"latency_p95_ms"`
}

// seriesGroups are UsageSeries' second dimension: the grouping expression
// (over hourlyUnion's columns) and its label (over the grouped value g).
// "status" is not a column: a series by status groups by day alone and
// splits each day into status classes (seriesByStatus). A fixed allowlist,
// never text from the request.
var seriesGroups = map[string]struct{ by, label string }{
	"model":  {"model", "g"},
	"key":    {"api_key_id", "coalesce(g::text, 'jwt')"},
	"status": {"", ""},
}

// ValidSeriesGroup reports whether UsageSeries accepts by.
func ValidSeriesGroup(by string) bool { _, ok := seriesGroups[by]; return ok }

// seriesColumns are a series cell's sums: requests, tokens, errors (status
// 400 and above), client errors (400 to 499), cost, and the counts of each
// latency bucket. The counts are summed as integer, whose sum PostgreSQL
// accumulates in a bigint, where a bigint's goes through numeric: half the
// time of a 30-day series (one rollup row's counts are of one hour, model
// and key, far below 2^31; a larger one would fail the cast, not wrap).
var seriesColumns = func() []hourlyColumn {
	cols := []hourlyColumn{
		{"n", "requests::int", "1"},
		{"p", "prompt_tokens", "prompt_tokens"},
		{"c", "completion_tokens", "completion_tokens"},
		{"u", "usage_tokens", "usage_tokens"},
		{"e", "errors::int", "(status >= 400)::int"},
		{"ce", "client_errors::int", "(status BETWEEN 400 AND 499)::int"},
		{"m", "cost_micros", "cost_micros"}, // summed without coalesce: NULL while nothing is priced
	}
	for i := range len(latencyBounds) + 1 {
		n := strconv.Itoa(i)
		cols = append(cols, hourlyColumn{"h" + n, "latency_histogram[" + strconv.Itoa(i+1) + "]::int", "(lb = " + n + ")::int"})
	}
	return cols
}()

// seriesQuery is UsageSeries' statement grouped by by; its parameters are
// usageArgs. Each row is the day (YYYY-MM-DD), the group (empty by
// status) and the sums of seriesColumns.
func seriesQuery(by string) (string, bool) {
	grp, ok := seriesGroups[by]
	if !ok {
		return "", false
	}
	groups, label, groupBy, order := []string{usageGroups["day"].by + " AS d"}, "''", "d", "d"
	if grp.by != "" {
		groups, label, groupBy, order = append(groups, grp.by+" AS g"), grp.label, "d, g", "d, label"
	}
	sums := make([]string, len(seriesColumns))
	for i, c := range seriesColumns {
		sums[i] = "coalesce(sum(" + c.name + "), 0)::bigint"
		if c.name == "m" {
			sums[i] = "sum(m)::bigint"
		}
	}
	return `SELECT to_char(to_timestamp(d * 86400) AT TIME ZONE 'UTC', 'YYYY-MM-DD'), ` + label + ` AS label, ` +
		strings.Join(sums, ", ") + ` FROM (` + hourlyUnion(byModelAndKey, groups, seriesColumns) + `) x GROUP BY ` + groupBy + ` ORDER BY ` + order, true
}

// UsageSeries is Usage by day and by a second dimension (model, key or
// status class: "ok" below 400, "4xx", "5xx" for 500 and above), with the
// errors and latency percentiles of each cell. Like Usage, it reads whole
// days from usage_daily, the other whole hours from usage_hourly (whose
// latency histograms and client error counts data-plane migration 00003 added) and
// only the partial hours at the ends of [since, until) from prompts,
// within org's tenant context.
func (s *Store) UsageSeries(ctx context.Context, org uuid.UUID, since, until time.Time, by string) ([]SeriesRow, error) {
	q, ok := seriesQuery(by)
	if !ok {
		return nil, fmt.Errorf("usage series: unknown grouping %q", by)
	}
	var out []SeriesRow
	err := s.inPlaceRead(ctx, org, reportSettings, func(tx pgx.Tx, p Place) error {
		rows, err := tx.Query(ctx, placeSQL(q, p), usageArgs(org, since, until)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			c, err := scanSeriesCell(rows)
			if err != nil {
				return err
			}
			if by == "status" {
				out = append(out, c.byStatus()...)
			} else {
				out = append(out, c.row())
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("usage series: %w", err)
	}
	return out, nil
}

// seriesCell is one row of seriesQuery.
type seriesCell struct {
	day, group                                     string
	requests, prompt, completion, total, errs, cli int64
	cost                                           *MicroUSD
	histogram                                      []int64
}

func scanSeriesCell(rows pgx.Rows) (seriesCell, error) {
	c := seriesCell{histogram: make([]int64, len(latencyBounds)+1)}
	dest := []any{&c.day, &c.group, &c.requests, &c.prompt, &c.completion, &c.total, &c.errs, &c.cli, &c.cost}
	for i := range c.histogram {
		dest = append(dest, &c.histogram[i])
	}
	return c, rows.Scan(dest...)
}

func (c seriesCell) row() SeriesRow {
	return SeriesRow{Day: c.day, Group: c.group, Requests: c.requests, PromptTokens: c.prompt,
		CompletionTokens: c.completion, TotalTokens: c.total, Errors: c.errs, CostUSD: c.cost,
		LatencyP50MS: latencyPercentile(c.histogram, 0.5), LatencyP95MS: latencyPercentile(c.histogram, 0.95)}
}

// byStatus splits a day's cell into its status classes, those with
// requests only, each with the day's latency percentiles.
func (c seriesCell) byStatus() []SeriesRow {
	p50, p95 := latencyPercentile(c.histogram, 0.5), latencyPercentile(c.histogram, 0.95)
	var out []SeriesRow
	for _, s := range []struct {
		class      string
		n, errored int64
	}{{"ok", c.requests - c.errs, 0}, {"4xx", c.cli, c.cli}, {"5xx", c.errs - c.cli, c.errs - c.cli}} {
		if s.n > 0 {
			out = append(out, SeriesRow{Day: c.day, Group: s.class, Requests: s.n, Errors: s.errored, LatencyP50MS: p50, LatencyP95MS: p95})
		}
	}
	return out
}

// latencyPercentile is the upper bound of the latency bucket holding
// percentile p of histogram's counts: the bucket of the value that
// percentile_disc(p) picks (the first whose rank reaches ceil(p × n),
// computed as PostgreSQL does), so a cell's figure is that of its rows.
func latencyPercentile(histogram []int64, p float64) int64 {
	var n int64
	for _, c := range histogram {
		n += c
	}
	if n == 0 {
		return 0
	}
	rank := max(int64(math.Ceil(p*float64(n))), 1)
	var cum int64
	for i, c := range histogram {
		if cum += c; cum >= rank {
			return latencyBucketBound(i)
		}
	}
	return latencyBucketBound(len(histogram) - 1)
}

// latencyBucketBound is what a series reports for a latency in bucket i:
// its upper bound, or for the last, open-ended bucket its lower bound.
func latencyBucketBound(i int) int64 {
	return latencyBounds[min(i, len(latencyBounds)-1)]
}
