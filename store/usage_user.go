package store

import (
	"context"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// The report by end user reads the end users' rollups as cumulative sums
// (data-plane migration 00005): a usage_daily_user row's cum_x[k + 1] is
// the user's x in the hours of its day before hour k, a
// usage_monthly_user row's the same by day within its month, so that any
// run of hours of a day, or of days of a month, is one row per user. The
// days hold each end user's hours before user_through, the months the
// days before daily_through; the hours from user_through on are read
// from usage_hourly_user. A 30-day report then reads at most two month
// rows, two day rows and an hour or two per user, where it read one row
// per user and day and per user and hour of the partial days
// (BenchmarkUsageFiveMillionRows).

// rollupMarksSQL reads where a place's rollups end: daily_through and
// user_through.
const rollupMarksSQL = `SELECT daily_through, user_through FROM usage_rollup_state`

// reportArgs are the parameters of Usage's statement grouped by groupBy,
// in place p: usageArgs, and for the end users userArgs after reading
// where p's rollups end.
func reportArgs(ctx context.Context, tx pgx.Tx, p Place, org uuid.UUID, since, until time.Time, groupBy string) ([]any, error) {
	args := usageArgs(org, since, until)
	if groupBy != "user" {
		return args, nil
	}
	var dt, ut time.Time
	if err := tx.QueryRow(ctx, placeSQL(rollupMarksSQL, p)).Scan(&dt, &ut); err != nil {
		return nil, err
	}
	return userArgs(args, dt, ut), nil
}

// userUnion is hourlyUnion for the end users: the rows of their whole
// hours as userArgs cuts them ($8 to $17) and of the partial hours at
// either end from prompts, grouped by end_user AS g, with the columns
// cols (each a usageColumns rollup column or a constant).
func userUnion(cols []hourlyColumn) string {
	hourly := []string{"end_user AS g"}
	cum := []string{"x.end_user AS g"}
	for _, c := range cols {
		hourly = append(hourly, c.rollup+" AS "+c.name)
		cum = append(cum, cumSQL(c.rollup))
	}
	pieces := func(table, col, lo, hi, a, b string) string {
		return `SELECT ` + strings.Join(cum, ", ") + `
		FROM unnest(` + lo + `::timestamptz[], ` + hi + `::timestamptz[], ` + a + `::integer[], ` + b + `::integer[]) p(lo, hi, a, b)
		CROSS JOIN LATERAL (SELECT * FROM ` + table + ` WHERE organization_id = $1 AND ` + col + ` >= p.lo AND ` + col + ` < p.hi) x`
	}
	return `
		SELECT ` + strings.Join(hourly, ", ") + `
		FROM (SELECT hour AS t, * FROM usage_hourly_user WHERE organization_id = $1 AND hour >= $8 AND hour < $9) x
		UNION ALL ` + pieces("usage_daily_user", "day", "$10", "$11", "$12", "$13") + `
		UNION ALL ` + pieces("usage_monthly_user", "month", "$14", "$15", "$16", "$17") +
		rawHours([]string{"end_user AS g"}, cols)
}

// cumSQL is a rollup column's sum over the hours (or days) [p.a, p.b) of
// a row x of usage_daily_user (or usage_monthly_user): the difference of
// its cumulative sums. The cost stays NULL where nothing was priced
// before p.b; a constant stays itself.
func cumSQL(rollup string) string {
	switch rollup {
	case "requests", "prompt_tokens", "completion_tokens", "usage_tokens":
		return "coalesce(x.cum_" + rollup + "[p.b + 1], 0) - coalesce(x.cum_" + rollup + "[p.a + 1], 0)"
	case "cost_micros":
		return "x.cum_cost_micros[p.b + 1] - coalesce(x.cum_cost_micros[p.a + 1], 0)"
	}
	return rollup
}

// cumPieces are runs of rows of usage_daily_user or usage_monthly_user:
// those whose day (month) is in [lo[i], hi[i]), each summed over its
// hours (days) [a[i], b[i]).
type cumPieces struct {
	lo, hi []time.Time
	a, b   []int32
}

func (c *cumPieces) add(lo, hi time.Time, a, b int) {
	c.lo, c.hi, c.a, c.b = append(c.lo, lo), append(c.hi, hi), append(c.a, int32(a)), append(c.b, int32(b))
}

// userArgs appends to usageArgs' parameters args those of userUnion: the
// whole hours [h1, h2) of usageArgs cut, given the place's daily_through
// dt and user_through ut, into the hours from ut on ($8, $9), runs of
// days ($10 to $13) and of months ($14 to $17).
//
// They are exact whatever rolls run after dt and ut were read: a roll
// adds hours from ut on to the days and days from dt on to the months,
// which changes their cumulative sums after those points only, and the
// pieces sum the days' hours before ut and the months' days before dt.
func userArgs(args []any, dt, ut time.Time) []any {
	h1, h2 := args[2].(time.Time), args[5].(time.Time)
	const day = 24 * time.Hour
	dt, ut = dt.UTC(), ut.UTC()
	hours := func(d time.Duration) int { return int(d / time.Hour) }
	var days, months cumPieces
	a2 := minTime(h2, ut)
	if h1.Before(a2) {
		d := h1.UTC().Truncate(day)
		e := a2.UTC().Truncate(day)
		switch {
		case !a2.After(d.Add(day)): // within one day
			days.add(d, d.Add(day), hours(h1.Sub(d)), hours(a2.Sub(d)))
		default:
			ws := d
			if h1.After(d) {
				days.add(d, d.Add(day), hours(h1.Sub(d)), 24)
				ws = d.Add(day)
			}
			if a2.After(e) {
				days.add(e, e.Add(day), 0, hours(a2.Sub(e)))
			}
			// The whole days [ws, e): from the months before dt, from
			// the days after it.
			me := minTime(e, dt)
			for m := time.Date(ws.Year(), ws.Month(), 1, 0, 0, 0, 0, time.UTC); m.Before(me); m = m.AddDate(0, 1, 0) {
				lo, hi := maxTime(ws, m), minTime(me, m.AddDate(0, 1, 0))
				if lo.Before(hi) {
					months.add(m, m.Add(day), int(lo.Sub(m)/day), int(hi.Sub(m)/day))
				}
			}
			if x := maxTime(ws, dt); x.Before(e) {
				days.add(x, e, 0, 24)
			}
		}
	}
	hlo := maxTime(h1, ut)
	if !hlo.Before(h2) {
		hlo = h2
	}
	return append(args, hlo, h2, days.lo, days.hi, days.a, days.b, months.lo, months.hi, months.a, months.b)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
