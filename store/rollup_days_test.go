package store_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// rollupTenant is an organization in a schema of its own, so that a test
// may move its place's daily_through (as the owner) without changing
// what other tests' reports read.
func rollupTenant(t *testing.T) (org uuid.UUID, schema string) {
	t.Helper()
	a := storetest.PlacedAdmin(t)
	o, _, err := a.CreateOrgPlaced(context.Background(), store.NewOrg{Name: "rollup days", Capture: store.CaptureFull,
		Placement: store.Placement{Kind: store.PlaceSchema}}, store.Idempotency{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.DeleteOrg(context.Background(), o.ID) })
	return o.ID, store.SchemaName(o.ID)
}

// setDailyThrough moves a place's daily_through and user_through back to
// at, as the owner, and sums its daily and monthly rollups again from the
// hours (usage_reroll_org: as though the days from at on had not been
// rolled up yet): the days from at on are then summed from the hours
// until usage_roll_days runs. The writer rolls up the days due before its
// first batch: call it with no writer running.
func setDailyThrough(t *testing.T, owner *pgxpool.Pool, schema string, at time.Time) {
	t.Helper()
	for _, q := range []string{`UPDATE ` + schema + `.usage_rollup_state SET daily_through = $1, user_through = $1`,
		`SELECT ` + schema + `.usage_reroll_org(o) FROM (SELECT DISTINCT organization_id FROM ` + schema + `.usage_hourly WHERE $1::timestamptz IS NOT NULL) x(o)`} {
		if _, err := owner.Exec(context.Background(), q, at); err != nil {
			t.Fatal(err)
		}
	}
}

// usageByGroup is a tenant's Usage by groupBy as a map of group to
// requests, prompt tokens and cost.
func usageByGroup(t *testing.T, st *store.Store, org uuid.UUID, since, until time.Time, groupBy string) map[string][3]int64 {
	t.Helper()
	rows, err := st.Usage(context.Background(), org, since, until, groupBy)
	if err != nil {
		t.Fatalf("usage by %s: %v", groupBy, err)
	}
	out := map[string][3]int64{}
	for _, r := range rows {
		var cost int64
		if r.CostUSD != nil {
			cost = int64(*r.CostUSD)
		}
		out[r.Group] = [3]int64{r.Requests, r.PromptTokens, cost}
	}
	return out
}

// userUsageFromRows is usageByGroup by end user summed from org's rows in
// schema, as the owner.
func userUsageFromRows(t *testing.T, owner *pgxpool.Pool, schema string, org uuid.UUID, since, until time.Time) map[string][3]int64 {
	t.Helper()
	rows, err := owner.Query(context.Background(), `SELECT coalesce(end_user, ''), count(*), coalesce(sum(prompt_tokens), 0),
		coalesce(sum(cost_micros), 0) FROM `+schema+`.prompts WHERE organization_id = $1 AND created_at >= $2 AND created_at < $3 GROUP BY 1`,
		org, since, until)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][3]int64{}
	for rows.Next() {
		var g string
		var v [3]int64
		if err := rows.Scan(&g, &v[0], &v[1], &v[2]); err != nil {
			t.Fatal(err)
		}
		out[g] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// The daily rollups hold the days before daily_through, summed by
// usage_roll_days from the hours once a day is over; the days after it are
// read from the hours, and a row of a day already rolled up (a replay
// after an outage) is added by the trigger. Reports by day, model and end
// user (the group "" being the rows without one) are the same before and
// after a roll, and equal the rows.
func TestRollDays(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	org, schema := rollupTenant(t)
	ctx := context.Background()
	today := time.Now().UTC().Truncate(24 * time.Hour)
	if time.Since(today) < 2*time.Hour {
		t.Log("within two hours of midnight UTC: yesterday is not due for a roll yet, the test checks the days before it")
	}

	want := map[string]map[string][3]int64{"day": {}, "model": {}, "user": {}}
	w := startWriter(t, st, store.WriterOptions{FlushInterval: 10 * time.Millisecond})
	write := func(run string, days []int) {
		for i, d := range days {
			r := rec(org, run, i)
			r.CreatedAt = today.AddDate(0, 0, d).Add(time.Duration(i%20) * time.Hour)
			if d == 0 {
				r.CreatedAt = time.Now().Add(-time.Duration(i%3) * 50 * time.Minute) // some in hours the end users' days hold after a roll
			}
			r.ID = store.NewRowID(r.CreatedAt)
			r.Model = []string{"gpt-4o-mini", "gpt-4o"}[i%2]
			if i%3 != 0 {
				r.EndUser = fmt.Sprintf("user-%d", i%4)
			}
			r.Priced, r.Cost = true, store.MicroUSD(100+i)
			w.Record(r)
			add := func(by, g string) {
				v := want[by][g]
				want[by][g] = [3]int64{v[0] + 1, v[1] + int64(r.PromptTokens), v[2] + int64(r.Cost)}
			}
			add("day", r.CreatedAt.UTC().Format("2006-01-02"))
			add("model", r.Model)
			add("user", r.EndUser)
		}
	}
	// Days -4 to -1 and today; then daily_through goes back to day -3:
	// day -4 stays in the daily rollups, days -3 to -1 are in the hours
	// only, as they would be had no roll run for three days.
	var days []int
	for i := range 120 {
		days = append(days, -4+i%5)
	}
	write("roll"+uuid.NewString()[:8], days)
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
	setDailyThrough(t, owner, schema, today.AddDate(0, 0, -3))
	since, until := today.AddDate(0, 0, -6), time.Now().Add(time.Hour)
	check := func(when string) {
		t.Helper()
		for by, groups := range want {
			got := usageByGroup(t, st, org, since, until, by)
			if fmt.Sprint(got) != fmt.Sprint(groups) {
				t.Errorf("%s: usage by %s\n got %v\nwant %v", when, by, got, groups)
			}
		}
		// Windows starting and ending inside days, on days rolled up and
		// not: the end users' partial days from their cumulative sums
		// (data-plane 00005).
		for _, w := range [][2]time.Time{
			{today.AddDate(0, 0, -4).Add(5*time.Hour + 30*time.Minute), today.AddDate(0, 0, -1).Add(7*time.Hour + 15*time.Minute)},
			{today.AddDate(0, 0, -3).Add(13 * time.Hour), time.Now().Add(time.Hour)},
			{today.AddDate(0, 0, -2).Add(time.Hour), today.AddDate(0, 0, -2).Add(20 * time.Hour)},
			{today, time.Now()},
		} {
			got, want := usageByGroup(t, st, org, w[0], w[1], "user"), userUsageFromRows(t, owner, schema, org, w[0], w[1])
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s: usage by user [%s, %s)\n got %v\nwant %v", when, w[0], w[1], got, want)
			}
		}
		dailyMatchHours(t, owner, schema, []uuid.UUID{org})
	}
	check("before the roll")

	n, err := st.RollDays(ctx)
	if err != nil || n < 2 {
		t.Fatalf("RollDays = %d, %v; want at least this tenant's 2 days over", n, err)
	}
	var through time.Time
	if err := owner.QueryRow(ctx, `SELECT daily_through FROM `+schema+`.usage_rollup_state`).Scan(&through); err != nil {
		t.Fatal(err)
	}
	if due := time.Now().Add(-time.Hour).UTC().Truncate(24 * time.Hour); !through.Equal(due) {
		t.Errorf("daily_through %s after the roll, want %s", through, due)
	}
	if n, err := st.RollDays(ctx); err != nil || n != 0 {
		t.Errorf("a second roll: %d, %v; want nothing left to do", n, err)
	}
	check("after the roll")

	// Rows of days already rolled up: the trigger adds them.
	w = startWriter(t, st, store.WriterOptions{FlushInterval: 10 * time.Millisecond})
	write("late"+uuid.NewString()[:8], []int{-3, -2, -4, 0, -3})
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
	check("after late rows")
}

// Rolls while the writer writes rows of the very day being rolled: each
// row is counted once in the daily rollups, by the roll (committed before
// it) or by the trigger (after it), whichever way the two interleave. Each
// round moves daily_through back to a later day than the round before and
// writes that day's rows, so that its roll leaves the earlier rounds' days
// as they were: a row lost by any round stays lost.
func TestRollDaysWhileWriting(t *testing.T) {
	st := storetest.Open(t, store.Options{MaxConns: 8})
	owner := storetest.OwnerPool(t)
	org, schema := rollupTenant(t)
	ctx := context.Background()
	const rounds = 25
	due := time.Now().Add(-time.Hour).UTC().Truncate(24 * time.Hour)
	day := func(k int64) time.Time { return due.AddDate(0, 0, -int(k)) }

	w := startWriter(t, st, store.WriterOptions{FlushInterval: time.Millisecond, BatchSize: 50})
	var k atomic.Int64 // the round's day: due less k days
	k.Store(rounds)
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		run := "race" + uuid.NewString()[:8]
		for i := 0; !stop.Load(); i++ {
			r := rec(org, run, i)
			r.CreatedAt = day(k.Load()).Add(time.Duration(i%24) * time.Hour)
			r.ID = store.NewRowID(r.CreatedAt)
			if i%2 == 0 {
				r.EndUser = "u"
			}
			w.Record(r)
			if i%20 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	})
	for r := int64(rounds); r >= 1; r-- {
		k.Store(r)
		if _, err := owner.Exec(ctx, `UPDATE `+schema+`.usage_rollup_state SET daily_through = $1`, day(r)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Millisecond)
		if _, err := st.RollDays(ctx); err != nil {
			t.Errorf("RollDays: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
	dailyMatchHours(t, owner, schema, []uuid.UUID{org})
	var daily, rows int64
	if err := owner.QueryRow(ctx, `SELECT (SELECT coalesce(sum(requests), 0) FROM `+schema+`.usage_daily),
		(SELECT count(*) FROM `+schema+`.prompts WHERE organization_id = $1)`, org).Scan(&daily, &rows); err != nil {
		t.Fatal(err)
	}
	if daily != rows || rows == 0 {
		t.Errorf("the daily rollups count %d requests of %d rows", daily, rows)
	}
}

// A roll waits for a writer's transaction that has added a row of the day
// being rolled to the hours (and, reading daily_through before the roll,
// left it out of the days): the roll sums it once that commits.
func TestRollDaysWaitsForWriters(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	org, schema := rollupTenant(t)
	ctx := context.Background()
	yesterday := time.Now().Add(-time.Hour).UTC().Truncate(24*time.Hour).AddDate(0, 0, -1)
	setDailyThrough(t, owner, schema, yesterday)

	rolled := make(chan error, 1)
	waited := true
	err := st.InTenant(ctx, org, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO `+schema+`.prompts (organization_id, request_id, model, status, created_at)
			VALUES ($1, 'in flight', 'm', 200, $2)`, org, yesterday.Add(time.Hour)); err != nil {
			return err
		}
		go func() { _, err := st.RollDays(ctx); rolled <- err }()
		select {
		case err := <-rolled:
			waited = false
			t.Errorf("the roll did not wait for the writer: %v", err)
		case <-time.After(300 * time.Millisecond):
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if waited {
		if err := <-rolled; err != nil {
			t.Fatal(err)
		}
	}
	dailyMatchHours(t, owner, schema, []uuid.UUID{org})
	var n int64
	if err := owner.QueryRow(ctx, `SELECT coalesce(sum(requests), 0) FROM `+schema+`.usage_daily WHERE day = $1`, yesterday).Scan(&n); err != nil || n != 1 {
		t.Errorf("yesterday's daily rollup: %d requests, %v; want the one row", n, err)
	}
}
