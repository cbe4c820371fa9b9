package store_test

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// BenchmarkListPromptsMillionRows seeds (once per database) a tenant with
// 1,000,000 prompts among other tenants' rows, prints the EXPLAIN of the
// tenant's first page as the app role, fails unless it is an index scan on
// the partitions' primary keys (organization_id, created_at, id), and
// measures a page.
func BenchmarkListPromptsMillionRows(b *testing.B) {
	s, org := millionRows(b)
	ctx := context.Background()
	var plan []string
	err := s.InTenant(ctx, org, func(tx pgx.Tx) error {
		// The first page's first window: the last day (ListPrompts).
		rows, _ := tx.Query(ctx, `EXPLAIN SELECT * FROM prompts WHERE organization_id = $1 AND created_at >= now() - interval '1 day'
			ORDER BY created_at DESC, id DESC LIMIT 21`, org)
		var err error
		plan, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("EXPLAIN of the first page:\n%s", strings.Join(plan, "\n"))
	if !strings.Contains(strings.Join(plan, "\n"), "Index Scan Backward using prompts_") ||
		strings.Count(strings.Join(plan, "\n"), "InitPlan") != 1 {
		b.Fatalf("the list query does not use the partitions' primary keys with one InitPlan for the tenant setting")
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.ListPrompts(ctx, org, store.PromptFilter{Limit: 21}); err != nil {
			b.Fatal(err)
		}
	}
}

// millionRows seeds (once per database) the organization explain-1m with
// 1,000,000 prompts over the last 12 days, among other tenants' rows, and
// returns the app role's store and that organization.
func millionRows(b *testing.B) (*store.Store, uuid.UUID) {
	owner := storetest.OwnerPool(b)
	s := storetest.Open(b, store.Options{})
	ctx := context.Background()
	var org uuid.UUID
	err := owner.QueryRow(ctx, `SELECT id FROM organizations WHERE name = 'explain-1m'`).Scan(&org)
	if err != nil {
		org = uuid.New()
		start := time.Now()
		err = pgx.BeginFunc(ctx, owner, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO organizations (id, name) VALUES ($1, 'explain-1m')`, org); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO prompts (organization_id, id, request_id, model, prompt_text, response, status, created_at)
				SELECT $1, prompts_row_id(t, gen_random_uuid()), 'r' || g, 'm' || (g % 5), 'prompt', 'answer', 200, t
				FROM generate_series(1, 1000000) g, LATERAL (SELECT now() - make_interval(secs => g) AS t) c`, org)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := owner.Exec(ctx, `ANALYZE prompts`); err != nil {
			b.Fatal(err)
		}
		b.Logf("seeded 1,000,000 rows in %s", time.Since(start))
	}
	return s, org
}

// BenchmarkUsageSeriesMillionRows seeds (once per database) a tenant with
// 1,000,000 prompts over 30 days, three models, ten keys, 4xx and 5xx
// answers and latencies over the buckets, prints the EXPLAIN ANALYZE of
// the 30-day series behind the console's plots (UsageSeries) as the app
// role, fails unless it reads usage_daily and usage_hourly by their keys and only ranges of
// the partitions' primary keys for the partial hours at either end (no
// sequential scan, no JIT, no partition outside the range), and
// measures the series by model, key and status, Usage by day, and the
// series' former query over the rows (p50 and p99 as metrics).
func BenchmarkUsageSeriesMillionRows(b *testing.B) {
	owner := storetest.OwnerPool(b)
	s := storetest.Open(b, store.Options{})
	ctx := context.Background()
	org := seriesMillionRows(b, owner)
	until := time.Now()
	since := until.Add(-30 * 24 * time.Hour)
	var plan []string
	err := store.InTenantReportForTest(ctx, s, org, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "+store.SeriesQueryForTest("model"), store.UsageArgsForTest(org, since, until)...)
		var err error
		plan, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	text := strings.Join(plan, "\n")
	b.Logf("EXPLAIN ANALYZE of the 30-day usage series by model:\n%s", text)
	if !strings.Contains(text, "usage_daily_key") || !strings.Contains(text, "usage_hourly_key") || scansTable(text) ||
		strings.Contains(text, "JIT") || strings.Contains(text, "Gather") {
		b.Fatalf("the usage series does not read usage_daily and usage_hourly by their keys, scans a table, compiles or starts workers")
	}
	lo, hi := since.UTC().Add(-24*time.Hour).Format("20060102"), until.UTC().Format("20060102")
	for _, m := range regexp.MustCompile(`prompts_(\d{8})`).FindAllStringSubmatch(text, -1) {
		if m[1] < lo || m[1] > hi {
			b.Fatalf("the usage series plans partition %s, outside its range %s-%s", m[0], lo, hi)
		}
	}
	for _, by := range []string{"model", "key", "status"} {
		b.Run(by, func(b *testing.B) {
			var took []time.Duration
			for b.Loop() {
				t0 := time.Now()
				if _, err := s.UsageSeries(ctx, org, since, until, by); err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(t0))
			}
			reportPercentiles(b, took)
		})
	}
	// Usage (the read API's and the admin API's report) reads the same
	// rollups.
	b.Run("usage-by-day", func(b *testing.B) {
		var took []time.Duration
		for b.Loop() {
			t0 := time.Now()
			if _, err := s.Usage(ctx, org, since, until, "day"); err != nil {
				b.Fatal(err)
			}
			took = append(took, time.Since(t0))
		}
		reportPercentiles(b, took)
	})
	// The query UsageSeries ran before the rollups, over the same rows, for
	// the ratio in the same run.
	b.Run("raw-rows", func(b *testing.B) {
		var took []time.Duration
		for b.Loop() {
			t0 := time.Now()
			err := s.InTenant(ctx, org, func(tx pgx.Tx) error {
				rows, _ := tx.Query(ctx, rawSeriesQuery, org, since, until)
				rows.Close()
				return rows.Err()
			})
			if err != nil {
				b.Fatal(err)
			}
			took = append(took, time.Since(t0))
		}
		reportPercentiles(b, took)
	})
}

// rawSeriesQuery is the usage series by model as it was summed from prompts
// before migration 00018.
const rawSeriesQuery = `SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS d, model AS g, count(*),
	coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), coalesce(sum(usage_tokens), 0),
	count(*) FILTER (WHERE status >= 400),
	coalesce(percentile_disc(0.5) WITHIN GROUP (ORDER BY latency_ms), 0)::bigint,
	coalesce(percentile_disc(0.95) WITHIN GROUP (ORDER BY latency_ms), 0)::bigint
	FROM prompts WHERE organization_id = $1 AND created_at >= $2 AND created_at < $3 GROUP BY d, g ORDER BY d, g`

// seriesMillionRows seeds (once per database) the organization series-1m:
// 1,000,000 prompts over the last 30 days (one every 2.59 s), as
// BenchmarkUsageFiveMillionRows builds its tenant.
func seriesMillionRows(b *testing.B, owner *pgxpool.Pool) uuid.UUID {
	ctx := context.Background()
	var org uuid.UUID
	if owner.QueryRow(ctx, `SELECT id FROM organizations WHERE name = 'series-1m'`).Scan(&org) == nil {
		return org
	}
	org = uuid.New()
	start := time.Now()
	err := pgx.BeginFunc(ctx, owner, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO organizations (id, name) VALUES ($1, 'series-1m')`, org); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO api_keys (organization_id, id, key_hash, display_prefix, name, rate_limit_per_minute)
			SELECT $1::uuid, gen_random_uuid(), sha256(($1::uuid::text || k)::bytea), 'sk_b', 'k' || k, 60 FROM generate_series(1, 10) k`, org)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	const rows, step = 1_000_000, 250_000
	for lo := 0; lo < rows; lo += step {
		_, err := owner.Exec(ctx, `INSERT INTO prompts (organization_id, id, request_id, api_key_id, model, prompt_text, response,
				status, prompt_tokens, completion_tokens, usage_tokens, latency_ms, created_at)
			SELECT $1, prompts_row_id(t, gen_random_uuid()), 'r' || g, k.id, 'm' || (g % 3), 'prompt', 'answer',
				CASE WHEN g % 53 = 0 THEN 502 WHEN g % 31 = 0 THEN 429 ELSE 200 END, 10, 20, 30, (g::bigint * 7919 % 9000)::int, t
			FROM generate_series($2::int, $3::int) g
			CROSS JOIN LATERAL (SELECT now() - make_interval(secs => g * 2.592) AS t) c
			CROSS JOIN LATERAL (SELECT id FROM api_keys WHERE organization_id = $1 ORDER BY id OFFSET g % 10 LIMIT 1) k`,
			org, lo, lo+step-1)
		if err != nil {
			b.Fatal(err)
		}
	}
	if _, err := owner.Exec(ctx, `ANALYZE prompts; ANALYZE usage_hourly`); err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded 1,000,000 rows in %s", time.Since(start))
	return org
}

// BenchmarkUsageFiveMillionRows seeds (once per database) a tenant with
// 5,000,000 prompts over 30 days, three models and ten keys, prints the
// EXPLAIN of a 30-day usage report as the app role, fails unless it reads
// usage_hourly and only ranges of the partitions' primary keys for the
// partial hours at either end, and measures the report by day, model,
// key and end user, and the read API's first page of rows (p50 and p99
// of each as metrics).
func BenchmarkUsageFiveMillionRows(b *testing.B) {
	owner := storetest.OwnerPool(b)
	s := storetest.Open(b, store.Options{})
	ctx := context.Background()
	var org uuid.UUID
	err := owner.QueryRow(ctx, `SELECT id FROM organizations WHERE name = 'usage-5m'`).Scan(&org)
	if err != nil {
		org = uuid.New()
		start := time.Now()
		err = pgx.BeginFunc(ctx, owner, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO organizations (id, name) VALUES ($1, 'usage-5m')`, org); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO api_keys (organization_id, id, key_hash, display_prefix, name, rate_limit_per_minute)
				SELECT $1::uuid, gen_random_uuid(), sha256(($1::uuid::text || k)::bytea), 'sk_b', 'k' || k, 60 FROM generate_series(1, 10) k`, org)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		// 5M rows over the last 30 days (one every 0.52 s), in steps of
		// 500,000 so the rollup trigger's transition table stays small.
		const rows, step = 5_000_000, 500_000
		for lo := 0; lo < rows; lo += step {
			_, err := owner.Exec(ctx, `INSERT INTO prompts (organization_id, id, request_id, api_key_id, model, prompt_text, response,
					status, prompt_tokens, completion_tokens, usage_tokens, created_at, end_user, cost_micros)
				SELECT $1, prompts_row_id(t, gen_random_uuid()), 'r' || g, k.id, 'm' || (g % 3), 'prompt', 'answer', 200, 10, 20, 30, t,
					'user-' || (g % 1000), 45
				FROM generate_series($2::int, $3::int) g
				CROSS JOIN LATERAL (SELECT now() - make_interval(secs => g * 0.5184) AS t) c
				CROSS JOIN LATERAL (SELECT id FROM api_keys WHERE organization_id = $1 ORDER BY id OFFSET g % 10 LIMIT 1) k`,
				org, lo, lo+step-1)
			if err != nil {
				b.Fatal(err)
			}
		}
		if _, err := owner.Exec(ctx, `ANALYZE prompts; ANALYZE usage_hourly; ANALYZE usage_hourly_user`); err != nil {
			b.Fatal(err)
		}
		b.Logf("seeded 5,000,000 rows in %s", time.Since(start))
	}
	// The writer's hourly round: the days and the end users' hours over
	// into their rollups.
	if _, err := s.RollDays(ctx); err != nil {
		b.Fatal(err)
	}
	until := time.Now()
	since := until.Add(-30 * 24 * time.Hour)
	explain := func(g string) string {
		var plan []string
		err := store.InTenantReportForTest(ctx, s, org, func(tx pgx.Tx) error {
			args, err := store.ReportArgsForTest(ctx, tx, org, since, until, g)
			if err != nil {
				return err
			}
			rows, _ := tx.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "+store.UsageQueryForTest(g), args...)
			plan, err = pgx.CollectRows(rows, pgx.RowTo[string])
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		text := strings.Join(plan, "\n")
		b.Logf("EXPLAIN ANALYZE of a 30-day usage report by %s:\n%s", g, text)
		if scansTable(text) || strings.Contains(text, "JIT") {
			b.Fatalf("the usage report by %s scans a table or compiles", g)
		}
		return text
	}
	if !strings.Contains(explain("model"), "usage_hourly_key") {
		b.Fatalf("the usage report does not read usage_hourly by its key")
	}
	// By end user: a month or two, a day or two and an hour or two of
	// rollup rows per user (data-plane 00005).
	if text := explain("user"); !strings.Contains(text, "usage_monthly_user_key") {
		b.Fatalf("the usage report by end user does not read usage_monthly_user by its key")
	}
	// user: 1,000 end users, so usage_hourly_user holds 720,000 rows for
	// the month (one per user and hour) where usage_hourly has 21,600;
	// the report reads about 5,000 of their rollups' rows.
	for _, g := range []string{"day", "model", "key", "user"} {
		b.Run(g, func(b *testing.B) {
			var took []time.Duration
			for b.Loop() {
				t0 := time.Now()
				if _, err := s.Usage(ctx, org, since, until, g); err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(t0))
			}
			reportPercentiles(b, took)
		})
	}
	// The read API's first page of the tenant's rows (/api/v1/prompts).
	b.Run("prompts-first-page", func(b *testing.B) {
		var took []time.Duration
		for b.Loop() {
			t0 := time.Now()
			if _, err := s.ListPrompts(ctx, org, store.PromptFilter{Limit: 21}); err != nil {
				b.Fatal(err)
			}
			took = append(took, time.Since(t0))
		}
		reportPercentiles(b, took)
	})
}

// BenchmarkUsageMillionRows: the read API's Usage (group_by=day) over 30
// days of the 1,000,000-row tenant explain-1m.
func BenchmarkUsageMillionRows(b *testing.B) {
	s, org := millionRows(b)
	ctx := context.Background()
	until := time.Now()
	for b.Loop() {
		if _, err := s.Usage(ctx, org, until.Add(-30*24*time.Hour), until, "day"); err != nil {
			b.Fatal(err)
		}
	}
}

// scansTable reports whether an EXPLAIN's text scans a table whole, other
// than usage_rollup_state (one row: where the daily rollups end).
func scansTable(text string) bool {
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, "Seq Scan") && !strings.Contains(line, "Seq Scan on usage_rollup_state") {
			return true
		}
	}
	return false
}
