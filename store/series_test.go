package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// seriesFromRows is the usage series computed from prompts alone, as the
// owner, with percentile_disc over the rows' latencies mapped to their
// latency buckets in Go: what UsageSeries answered before the rollups,
// to the bucket.
func seriesFromRows(t *testing.T, owner *pgxpool.Pool, org uuid.UUID, since, until time.Time, by string) []store.SeriesRow {
	t.Helper()
	expr := map[string]string{
		"model":  "model",
		"key":    "coalesce(api_key_id::text, 'jwt')",
		"status": "CASE WHEN status < 400 THEN 'ok' WHEN status < 500 THEN '4xx' ELSE '5xx' END",
	}[by]
	tokens := "sum(prompt_tokens), sum(completion_tokens), sum(usage_tokens)"
	cost := "sum(cost_micros)"
	latency := "percentile_disc(0.5) WITHIN GROUP (ORDER BY greatest(latency_ms, 0)), percentile_disc(0.95) WITHIN GROUP (ORDER BY greatest(latency_ms, 0))"
	if by == "status" { // tokens 0, the day's latency
		tokens = "0::bigint, 0::bigint, 0::bigint"
		cost = "NULL::bigint"
		latency = "max(p50), max(p95)"
	}
	rows, err := owner.Query(context.Background(), `
		WITH r AS (SELECT *, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS d FROM prompts
			WHERE organization_id = $1 AND created_at >= $2 AND created_at < $3),
		days AS (SELECT d, percentile_disc(0.5) WITHIN GROUP (ORDER BY greatest(latency_ms, 0)) AS p50,
			percentile_disc(0.95) WITHIN GROUP (ORDER BY greatest(latency_ms, 0)) AS p95 FROM r GROUP BY d)
		SELECT r.d, `+expr+` AS g, count(*), `+tokens+`, count(*) FILTER (WHERE status >= 400), `+cost+`, `+latency+`
		FROM r JOIN days USING (d) GROUP BY r.d, g ORDER BY r.d, array_position(ARRAY['ok', '4xx', '5xx'], `+expr+`), g`, org, since, until)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.SeriesRow, error) {
		var s store.SeriesRow
		err := r.Scan(&s.Day, &s.Group, &s.Requests, &s.PromptTokens, &s.CompletionTokens, &s.TotalTokens, &s.Errors,
			&s.CostUSD, &s.LatencyP50MS, &s.LatencyP95MS)
		s.LatencyP50MS, s.LatencyP95MS = store.LatencyBucketForTest(s.LatencyP50MS), store.LatencyBucketForTest(s.LatencyP95MS)
		return s, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// UsageSeries reads whole hours from usage_hourly (with the latency
// histograms and client error counts of data-plane migration 00003) and the partial
// hours at the ends of its window from prompts: for any window, by model,
// key or status, it answers what the rows answer, latency percentiles to
// the bucket. The other tenant's rows in the same hours change nothing,
// and a replayed row (a conflict) counts once.
func TestUsageSeriesMatchesRows(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	orgs := newOrgs(t, owner, 2)
	org := orgs[0]
	ctx := context.Background()
	keys := []uuid.UUID{uuid.New(), uuid.New()}
	for i, k := range keys {
		if _, err := owner.Exec(ctx, `INSERT INTO api_keys (organization_id, id, key_hash, display_prefix, name, rate_limit_per_minute)
			VALUES ($1, $2, $3, 'sk_s', 'series test', 60)`, org, k, []byte(fmt.Sprintf("%031ds", i))); err != nil {
			t.Fatal(err)
		}
	}
	// Three days of rows every 6m37s, off the hour, over three models, two
	// keys and JWT callers; 4xx and 5xx now and then; latencies from
	// negative (a clock step) to beyond the last bucket. Two statements,
	// the even rows and the odd, so that most rollup rows are inserted by
	// one and updated by the other.
	base := time.Now().UTC().Add(-80 * time.Hour).Truncate(time.Hour).Add(11*time.Minute + 7*time.Second)
	for _, o := range orgs {
		for _, first := range []int{0, 1} {
			if _, err := owner.Exec(ctx, `INSERT INTO prompts (organization_id, id, request_id, api_key_id, model, status,
					prompt_tokens, completion_tokens, usage_tokens, latency_ms, created_at, cost_micros)
				SELECT $1, prompts_row_id(t, gen_random_uuid()), 's-' || g,
					CASE WHEN $1 = $3::uuid THEN ($4::uuid[])[g % 3 + 1] END, 'm' || (g % 7 % 3),
					CASE WHEN g % 13 = 0 THEN 500 WHEN g % 7 = 0 THEN 429 WHEN g % 19 = 0 THEN 404 ELSE 200 END,
					g % 13, g % 17, g % 13 + g % 17,
					CASE WHEN g % 97 = 0 THEN -3 WHEN g % 89 = 0 THEN 400000 ELSE (g * g * 31) % 25000 END, t,
					CASE WHEN g % 7 % 3 = 2 THEN NULL ELSE g % 11 * 1000 END -- model m2 is not priced
				FROM generate_series($5::int, 72 * 60 / 6, 2) g, LATERAL (SELECT $2::timestamptz + g * interval '397 seconds' AS t) c`,
				o, base, org, keys, first); err != nil {
				t.Fatal(err)
			}
		}
	}
	hour := base.Truncate(time.Hour)
	windows := [][2]time.Time{
		{base.Add(-time.Hour), time.Now().Add(time.Hour)},
		{hour.Add(5 * time.Hour), hour.Add(29 * time.Hour)},
		{hour.Add(5*time.Hour + time.Minute), hour.Add(5*time.Hour + 50*time.Minute)},
		{hour.Add(30 * time.Minute), hour.Add(50*time.Hour + 30*time.Minute)},
		{hour.Add(7 * time.Hour), hour.Add(7 * time.Hour)},
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 10 {
		a := base.Add(time.Duration(r.Int64N(int64(75 * time.Hour))))
		windows = append(windows, [2]time.Time{a, a.Add(time.Duration(r.Int64N(int64(40 * time.Hour))))})
	}
	check := func(t *testing.T) {
		t.Helper()
		for _, w := range windows {
			for _, by := range []string{"model", "key", "status"} {
				got, err := st.UsageSeries(ctx, org, w[0], w[1], by)
				if err != nil {
					t.Fatal(err)
				}
				want := seriesFromRows(t, owner, org, w[0], w[1], by)
				if !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
					t.Errorf("by=%s [%s, %s):\n got %v\nwant %v", by, w[0].Format(time.RFC3339Nano), w[1].Format(time.RFC3339Nano), got, want)
				}
			}
		}
	}
	check(t)
	rollupHistogramsMatchRows(t, owner, orgs)
	rollupsMatchRows(t, owner, orgs)
	err := st.InTenant(ctx, org, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO prompts (organization_id, id, created_at, request_id, api_key_id, model, status, latency_ms)
			SELECT organization_id, id, created_at, request_id, api_key_id, model, status, latency_ms
			FROM prompts WHERE organization_id = $1
			ON CONFLICT ON CONSTRAINT prompts_pkey DO NOTHING`, org)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	check(t)
	rollupHistogramsMatchRows(t, owner, orgs)

	// B's series holds only B's rows.
	got, err := st.UsageSeries(ctx, orgs[1], base.Add(-time.Hour), time.Now(), "key")
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range got {
		if row.Group != "jwt" {
			t.Errorf("B's series names %q, a key of A's", row.Group)
		}
	}
}

// rollupHistogramsMatchRows checks, as the owner, that every rollup row of
// orgs holds the client errors and the latency histogram of its prompts
// rows, bucketed in Go by the bounds the series reads them by.
func rollupHistogramsMatchRows(t *testing.T, owner *pgxpool.Pool, orgs []uuid.UUID) {
	t.Helper()
	ctx := context.Background()
	type cell struct {
		clientErrors int64
		histogram    [31]int64
	}
	key := func(org uuid.UUID, hour time.Time, model string, k *uuid.UUID) string {
		return fmt.Sprint(org, hour.UTC().Unix(), model, k)
	}
	want := map[string]*cell{}
	rows, _ := owner.Query(ctx, `SELECT organization_id, date_trunc('hour', created_at, 'UTC'), model, api_key_id, status, latency_ms
		FROM prompts WHERE organization_id = ANY($1)`, orgs)
	for rows.Next() {
		var org uuid.UUID
		var hour time.Time
		var model string
		var k *uuid.UUID
		var status, latency int64
		if err := rows.Scan(&org, &hour, &model, &k, &status, &latency); err != nil {
			t.Fatal(err)
		}
		c := want[key(org, hour, model, k)]
		if c == nil {
			c = &cell{}
			want[key(org, hour, model, k)] = c
		}
		if status >= 400 && status < 500 {
			c.clientErrors++
		}
		c.histogram[store.LatencyBucketIndexForTest(latency)]++
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	rows, _ = owner.Query(ctx, `SELECT organization_id, hour, model, api_key_id, client_errors, latency_histogram
		FROM usage_hourly WHERE organization_id = ANY($1)`, orgs)
	n := 0
	for rows.Next() {
		var org uuid.UUID
		var hour time.Time
		var model string
		var k *uuid.UUID
		var got cell
		var h []int64
		if err := rows.Scan(&org, &hour, &model, &k, &got.clientErrors, &h); err != nil {
			t.Fatal(err)
		}
		copy(got.histogram[:], h)
		if w := want[key(org, hour, model, k)]; w == nil || *w != got || len(h) != 31 {
			t.Errorf("rollup %s %s %s %v: %v (%d buckets), want %v", org, hour, model, k, got, len(h), w)
		}
		n++
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	if n != len(want) {
		t.Errorf("%d rollup rows, want %d", n, len(want))
	}
}
