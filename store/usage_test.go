package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// usageFromRows is the usage report summed from prompts alone, as the
// owner: what Usage answered before the rollups (migration 00015), and
// what it must still answer.
func usageFromRows(t *testing.T, owner *pgxpool.Pool, org uuid.UUID, since, until time.Time, groupBy string) []store.UsageRow {
	t.Helper()
	expr := map[string]string{
		"day":   "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
		"model": "model",
		"key":   "coalesce(api_key_id::text, 'jwt')",
		"user":  "coalesce(end_user, '')",
	}[groupBy]
	rows, err := owner.Query(context.Background(), `SELECT `+expr+` AS g, count(*), coalesce(sum(prompt_tokens), 0),
		coalesce(sum(completion_tokens), 0), coalesce(sum(usage_tokens), 0), sum(cost_micros) FROM prompts
		WHERE organization_id = $1 AND created_at >= $2 AND created_at < $3 GROUP BY g ORDER BY g`, org, since, until)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[store.UsageRow])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Usage reads whole hours from usage_hourly and the partial hours at the
// ends of its window from prompts: for any window, in any grouping, it
// answers exactly what summing the rows answers. Another tenant's rows in
// the same hours change nothing, and a replayed row (a conflict) counts
// once.
func TestUsageMatchesRows(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	orgs := newOrgs(t, owner, 2)
	org := orgs[0]
	ctx := context.Background()
	keys := []uuid.UUID{uuid.New(), uuid.New()}
	for i, k := range keys {
		if _, err := owner.Exec(ctx, `INSERT INTO api_keys (organization_id, id, key_hash, display_prefix, name, rate_limit_per_minute)
			VALUES ($1, $2, $3, 'sk_u', 'usage test', 60)`, org, k, []byte(fmt.Sprintf("%032d", i))); err != nil {
			t.Fatal(err)
		}
	}
	// Three days of rows every 7m13s, starting off the hour, over three
	// models, two keys and JWT callers (no key); errors now and then; four
	// end users and none, a cost on two rows of three. The other tenant
	// gets rows at the same times.
	base := time.Now().UTC().Add(-80 * time.Hour).Truncate(time.Hour).Add(17*time.Minute + 3*time.Second)
	for _, o := range orgs {
		if _, err := owner.Exec(ctx, `INSERT INTO prompts (organization_id, id, request_id, api_key_id, model, status,
				prompt_tokens, completion_tokens, usage_tokens, latency_ms, created_at, end_user, cost_micros)
			SELECT $1, prompts_row_id(t, gen_random_uuid()), 'u-' || g,
				CASE WHEN $1 = $3::uuid THEN ($4::uuid[])[g % 3 + 1] END, 'm' || (g % 5 % 3),
				CASE WHEN g % 11 = 0 THEN 500 ELSE 200 END, g % 13, g % 17, g % 13 + g % 17, g % 900, t,
				CASE WHEN g % 5 <> 0 THEN 'user-' || (g % 4) END, CASE WHEN g % 3 <> 0 THEN g * 7 END
			FROM generate_series(0, 72 * 60 / 7) g, LATERAL (SELECT $2::timestamptz + g * interval '433 seconds' AS t) c`,
			o, base, org, keys); err != nil {
			t.Fatal(err)
		}
	}
	hour := base.Truncate(time.Hour)
	windows := [][2]time.Time{
		{base.Add(-time.Hour), time.Now().Add(time.Hour)},                             // everything
		{hour.Add(5 * time.Hour), hour.Add(29 * time.Hour)},                           // whole hours only
		{hour.Add(5*time.Hour + time.Minute), hour.Add(5*time.Hour + 50*time.Minute)}, // inside one hour
		{hour.Add(5*time.Hour + 59*time.Minute), hour.Add(6*time.Hour + time.Minute)}, // across one boundary, no whole hour
		{hour.Add(30 * time.Minute), hour.Add(50*time.Hour + 30*time.Minute)},         // partial hours at both ends
		{hour.Add(7 * time.Hour), hour.Add(7 * time.Hour)},                            // empty
		{hour.Add(9 * time.Hour), hour.Add(9*time.Hour + 1)},                          // one nanosecond
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		a := base.Add(time.Duration(r.Int64N(int64(75 * time.Hour))))
		windows = append(windows, [2]time.Time{a, a.Add(time.Duration(r.Int64N(int64(30 * time.Hour))))})
	}
	check := func(t *testing.T) {
		t.Helper()
		for _, w := range windows {
			for _, g := range []string{"day", "model", "key", "user"} {
				got, err := st.Usage(ctx, org, w[0], w[1], g)
				if err != nil {
					t.Fatal(err)
				}
				want := usageFromRows(t, owner, org, w[0], w[1], g)
				if !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
					t.Errorf("group_by=%s [%s, %s):\n got %v\nwant %v", g, w[0].Format(time.RFC3339Nano), w[1].Format(time.RFC3339Nano), got, want)
				}
			}
		}
	}
	check(t)

	// A replay of rows already stored (the writer's ON CONFLICT statement)
	// inserts nothing and counts nothing.
	err := st.InTenant(ctx, org, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO prompts (organization_id, id, created_at, request_id, api_key_id, model, status,
				prompt_tokens, completion_tokens, usage_tokens)
			SELECT organization_id, id, created_at, request_id, api_key_id, model, status, prompt_tokens, completion_tokens, usage_tokens
			FROM prompts WHERE organization_id = $1
			ON CONFLICT ON CONSTRAINT prompts_pkey DO NOTHING`, org)
		if err == nil && tag.RowsAffected() != 0 {
			err = fmt.Errorf("the replay inserted %d rows", tag.RowsAffected())
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	check(t)
	rollupsMatchRows(t, owner, orgs)
}

// rollupsMatchRows checks, as the owner, that every organization's
// usage_hourly rows sum to its prompts rows, hour by hour, and its
// usage_daily rows to its usage_hourly rows, day by day.
func rollupsMatchRows(t *testing.T, owner *pgxpool.Pool, orgs []uuid.UUID) {
	t.Helper()
	var bad int
	err := owner.QueryRow(context.Background(), `
		WITH r AS (
			SELECT organization_id, hour, model, api_key_id::text AS dim, requests, errors, prompt_tokens, completion_tokens, usage_tokens, latency_ms, cost_micros
			FROM usage_hourly WHERE organization_id = ANY($1)
			UNION ALL
			SELECT organization_id, hour, 'user', end_user, requests, errors, prompt_tokens, completion_tokens, usage_tokens, latency_ms, cost_micros
			FROM usage_hourly_user WHERE organization_id = ANY($1)),
		p AS (
			SELECT organization_id, date_trunc('hour', created_at, 'UTC') AS hour, model, api_key_id::text AS dim, count(*) AS requests,
				count(*) FILTER (WHERE status >= 400) AS errors, sum(prompt_tokens) AS prompt_tokens,
				sum(completion_tokens) AS completion_tokens, sum(usage_tokens) AS usage_tokens, sum(greatest(latency_ms, 0)) AS latency_ms,
				sum(cost_micros) AS cost_micros
			FROM prompts WHERE organization_id = ANY($1) GROUP BY 1, 2, 3, 4
			UNION ALL
			SELECT organization_id, date_trunc('hour', created_at, 'UTC') AS hour, 'user', end_user, count(*) AS requests,
				count(*) FILTER (WHERE status >= 400) AS errors, sum(prompt_tokens) AS prompt_tokens,
				sum(completion_tokens) AS completion_tokens, sum(usage_tokens) AS usage_tokens, sum(greatest(latency_ms, 0)) AS latency_ms,
				sum(cost_micros) AS cost_micros
			FROM prompts WHERE organization_id = ANY($1) AND end_user IS NOT NULL GROUP BY 1, 2, 3, 4)
		SELECT count(*) FROM ((TABLE r EXCEPT ALL TABLE p) UNION ALL (TABLE p EXCEPT ALL TABLE r)) d`, orgs).Scan(&bad)
	if err != nil {
		t.Fatal(err)
	}
	if bad != 0 {
		t.Errorf("%d rollup rows differ from the rows they sum", bad)
	}
	dailyMatchHours(t, owner, "public", orgs)
}

// dailyMatchHours checks, as the owner, that in schema (a place's) the
// organizations' usage_daily and usage_daily_user rows sum their hourly
// rollups, day by day, for every day before usage_rollup_state's
// daily_through, and hold no day after it (data-plane 00003 and 00004).
func dailyMatchHours(t *testing.T, owner *pgxpool.Pool, schema string, orgs []uuid.UUID) {
	t.Helper()
	var bad int
	err := owner.QueryRow(context.Background(), strings.ReplaceAll(`
		WITH w AS (SELECT daily_through AS through, user_through AS uthrough FROM S.usage_rollup_state),
		d AS (
			SELECT organization_id, day, model, api_key_id::text AS dim, requests, errors, prompt_tokens, completion_tokens, usage_tokens,
				latency_ms, cost_micros, client_errors, latency_histogram
			FROM S.usage_daily WHERE organization_id = ANY($1)
			UNION ALL
			SELECT organization_id, day, 'user', end_user, requests, errors, prompt_tokens, completion_tokens, usage_tokens,
				latency_ms, cost_micros, 0, '{}'
			FROM S.usage_daily_user WHERE organization_id = ANY($1)),
		h AS (
			SELECT organization_id, date_trunc('day', hour, 'UTC'), model, api_key_id::text, sum(requests)::bigint, sum(errors)::bigint,
				sum(prompt_tokens)::bigint, sum(completion_tokens)::bigint, sum(usage_tokens)::bigint, sum(latency_ms)::bigint,
				sum(cost_micros)::bigint, sum(client_errors)::bigint, S.usage_histogram_sum(latency_histogram)
			FROM S.usage_hourly, w WHERE organization_id = ANY($1) AND hour < w.through GROUP BY 1, 2, 3, 4
			UNION ALL
			SELECT organization_id, date_trunc('day', hour, 'UTC'), 'user', end_user, sum(requests)::bigint, sum(errors)::bigint,
				sum(prompt_tokens)::bigint, sum(completion_tokens)::bigint, sum(usage_tokens)::bigint, sum(latency_ms)::bigint,
				sum(cost_micros)::bigint, 0, '{}'
			FROM S.usage_hourly_user, w WHERE organization_id = ANY($1) AND hour < w.uthrough GROUP BY 1, 2, 3, 4)
		SELECT count(*) FROM ((TABLE d EXCEPT ALL TABLE h) UNION ALL (TABLE h EXCEPT ALL TABLE d)) x`, "S.", schema+"."), orgs).Scan(&bad)
	if err != nil {
		t.Fatal(err)
	}
	if bad != 0 {
		t.Errorf("%s: %d daily rollup rows differ from the hours they sum", schema, bad)
	}
	cumMatchHours(t, owner, schema, orgs)
}

// cumMatchHours checks, as the owner, the end users' cumulative sums in
// schema (data-plane 00005): each usage_daily_user row's cum_x[k + 1] is
// x summed over the user's hours of the day before hour k and before
// user_through, each usage_monthly_user row's over the hours of the month
// before day k + 1 and before daily_through, and every (month, user) with
// hours before daily_through has its row.
func cumMatchHours(t *testing.T, owner *pgxpool.Pool, schema string, orgs []uuid.UUID) {
	t.Helper()
	for _, c := range []struct{ table, col, step, through, n string }{
		{"usage_daily_user", "day", "1 hour", "user_through", "25"},
		{"usage_monthly_user", "month", "1 day", "daily_through", "32"},
	} {
		var bad, missing int
		err := owner.QueryRow(context.Background(), strings.NewReplacer("S.", schema+".", "{T}", c.table, "{C}", c.col, "{STEP}", c.step, "{W}", c.through, "{N}", c.n).Replace(`
			SELECT count(*) FROM S.{T} r CROSS JOIN generate_series(0, {N} - 1) k
			CROSS JOIN LATERAL (SELECT coalesce(sum(h.requests), 0) AS n, coalesce(sum(h.prompt_tokens), 0) AS p,
					coalesce(sum(h.completion_tokens), 0) AS c, coalesce(sum(h.usage_tokens), 0) AS u, sum(h.cost_micros) AS m
				FROM S.usage_hourly_user h WHERE h.organization_id = r.organization_id AND h.end_user = r.end_user AND h.hour >= r.{C}
				  AND h.hour < least(r.{C} + k * interval '{STEP}', r.{C} + interval '1 {C}', (SELECT {W} FROM S.usage_rollup_state))) h
			WHERE r.organization_id = ANY($1) AND (cardinality(r.cum_requests) IS DISTINCT FROM {N} OR
				cardinality(r.cum_cost_micros) IS DISTINCT FROM {N} OR
				(coalesce(r.cum_requests[k + 1], 0), coalesce(r.cum_prompt_tokens[k + 1], 0), coalesce(r.cum_completion_tokens[k + 1], 0),
				 coalesce(r.cum_usage_tokens[k + 1], 0), r.cum_cost_micros[k + 1]) IS DISTINCT FROM (h.n, h.p, h.c, h.u, h.m))`), orgs).Scan(&bad)
		if err != nil {
			t.Fatal(err)
		}
		err = owner.QueryRow(context.Background(), strings.NewReplacer("S.", schema+".", "{T}", c.table, "{C}", c.col, "{W}", c.through).Replace(`
			SELECT count(*) FROM (SELECT DISTINCT organization_id, date_trunc('{C}', hour, 'UTC') AS p, end_user FROM S.usage_hourly_user
				WHERE organization_id = ANY($1) AND hour < (SELECT {W} FROM S.usage_rollup_state)) h
			WHERE NOT EXISTS (SELECT FROM S.{T} r WHERE (r.organization_id, r.{C}, r.end_user) = (h.organization_id, h.p, h.end_user))`), orgs).Scan(&missing)
		if err != nil {
			t.Fatal(err)
		}
		if bad != 0 || missing != 0 {
			t.Errorf("%s.%s: %d cumulative sums differ from the hours they sum, %d rows missing", schema, c.table, bad, missing)
		}
	}
}

// Two replicas' writers, each holding the same tenants in one transaction
// and receiving them in opposite orders, update the same rollup rows: the
// writer orders a transaction's tenants, so neither ever waits for the
// other in a cycle (a deadlock would fail a batch), and the rollups add up.
func TestUsageRollupsConcurrentWriters(t *testing.T) {
	owner := storetest.OwnerPool(t)
	orgs := newOrgs(t, owner, 40)
	run := "cw" + uuid.NewString()[:8]
	opts := store.WriterOptions{BatchSize: 400, FlushInterval: time.Millisecond, Concurrency: 1}
	a := startWriter(t, storetest.Open(t, store.Options{}), opts)
	b := startWriter(t, storetest.Open(t, store.Options{}), opts)
	const rounds = 60
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range rounds * len(orgs) {
			b.Record(rec(orgs[len(orgs)-1-i%len(orgs)], run, 2*i+1))
		}
	}()
	for i := range rounds * len(orgs) {
		a.Record(rec(orgs[i%len(orgs)], run, 2*i))
	}
	<-done
	for _, w := range []*running{a, b} {
		if err := w.stop(t); err != nil {
			t.Fatal(err)
		}
	}
	for name, w := range map[string]*running{"a": a, "b": b} {
		if s := w.Stats(); s.Written != rounds*int64(len(orgs)) || s.BatchesFailed != 0 {
			t.Errorf("writer %s: Written=%d BatchesFailed=%d, want %d and 0", name, s.Written, s.BatchesFailed, rounds*len(orgs))
		}
	}
	if got := total(countByOrg(t, owner, orgs, run)); got != 2*rounds*len(orgs) {
		t.Errorf("%d rows, want %d", got, 2*rounds*len(orgs))
	}
	rollupsMatchRows(t, owner, orgs)
}
