package store_test

import (
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// latestVersion is the newest migration in store/migrations.
const latestVersion = 21

// migrationVersions are the versions of the files in store/migrations,
// ascending.
func migrationVersions(t *testing.T) []int64 {
	t.Helper()
	entries, err := os.ReadDir("migrations")
	if err != nil {
		t.Fatal(err)
	}
	var vs []int64
	for _, e := range entries {
		if e.IsDir() && e.Name() == "data" {
			continue // the data-plane set (store/dataplane.go), versioned per place
		}
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.ParseInt(num, 10, 64)
		if !ok || err != nil || !strings.HasSuffix(e.Name(), ".sql") {
			t.Fatalf("migration file %q is not NNNNN_name.sql", e.Name())
		}
		vs = append(vs, v)
	}
	slices.Sort(vs)
	return vs
}

// Two `bulkhead migrate` at once on an empty database (two replicas'
// init containers, say): both succeed, every migration is applied exactly
// once, and the schema is the latest.
func TestMigrateConcurrently(t *testing.T) {
	ownerDSN, _ := storetest.ScratchDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	applied := make([][]int64, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() { applied[i], errs[i] = store.Migrate(ctx, ownerDSN) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("migrate %d: %v", i, err)
		}
	}
	all := slices.Sorted(slices.Values(append(slices.Clone(applied[0]), applied[1]...)))
	// Each file's version once; numbers may have gaps where branches
	// reserved theirs.
	want := migrationVersions(t)
	if !slices.Equal(all, want) || want[len(want)-1] != latestVersion {
		t.Errorf("applied %v and %v; want each of %v once in all, the last %d", applied[0], applied[1], want, latestVersion)
	}
	again, err := store.Migrate(ctx, ownerDSN)
	if err != nil || len(again) != 0 {
		t.Errorf("a third migrate applied %v (%v), want nothing", again, err)
	}
}

// A database populated under the schema of 00007 upgrades across 00008
// (which rewrites every prompts row's id) and 00009 (which partitions the
// table, keeping the rows where they are): no row lost or
// duplicated, every id carries its row's created_at, and the app role
// finds each row by id inside its tenant and no other.
func TestMigrateUpgradesPopulatedDatabase(t *testing.T) {
	ownerDSN, appDSN := storetest.ScratchDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := store.MigrateToForTest(ctx, ownerDSN, 7); err != nil {
		t.Fatal(err)
	}
	owner, err := pgxpool.New(ctx, ownerDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	orgA, orgB := uuid.New(), uuid.New()
	const perOrg = 2000
	if _, err := owner.Exec(ctx, `INSERT INTO organizations (id, name) VALUES ($1, 'a'), ($2, 'b')`, orgA, orgB); err != nil {
		t.Fatal(err)
	}
	// Rows as the previous version wrote them: random v4 ids, times spread
	// over a month.
	if _, err := owner.Exec(ctx, `INSERT INTO prompts (organization_id, request_id, model, prompt_text, status, created_at)
		SELECT o, 'up-' || g, 'gpt-4o-mini', 'prompt ' || g, 200, now() - g * interval '20 minutes'
		FROM unnest($1::uuid[]) o, generate_series(1, $2) g`, []uuid.UUID{orgA, orgB}, perOrg); err != nil {
		t.Fatal(err)
	}
	applied, err := store.Migrate(ctx, ownerDSN)
	if err != nil {
		t.Fatal(err)
	}
	var after7 []int64
	for _, v := range migrationVersions(t) {
		if v > 7 {
			after7 = append(after7, v)
		}
	}
	if !slices.Equal(applied, after7) {
		t.Fatalf("applied %v, want %v", applied, after7)
	}
	var rows, distinct, untimed int
	if err := owner.QueryRow(ctx, `SELECT count(*), count(DISTINCT (organization_id, request_id)),
		count(*) FILTER (WHERE prompts_row_id(created_at, id) <> id) FROM prompts`).Scan(&rows, &distinct, &untimed); err != nil {
		t.Fatal(err)
	}
	if rows != 2*perOrg || distinct != 2*perOrg || untimed != 0 {
		t.Fatalf("after the upgrade: %d rows, %d distinct, %d ids without their time; want %d, %d, 0", rows, distinct, untimed, 2*perOrg, 2*perOrg)
	}
	// The rollups of the rows already there (00015's hours, 00018's
	// histograms, client errors and days).
	rollupsMatchRows(t, owner, []uuid.UUID{orgA, orgB})
	rollupHistogramsMatchRows(t, owner, []uuid.UUID{orgA, orgB})

	st, err := store.Open(ctx, appDSN, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ids, err := owner.Query(ctx, `SELECT id, created_at FROM prompts WHERE organization_id = $1 ORDER BY random() LIMIT 50`, orgA)
	if err != nil {
		t.Fatal(err)
	}
	var sample []uuid.UUID
	for ids.Next() {
		var id uuid.UUID
		var at time.Time
		if err := ids.Scan(&id, &at); err != nil {
			t.Fatal(err)
		}
		if got, ok := store.RowIDTime(id); !ok || !got.Equal(at.Truncate(time.Microsecond)) {
			t.Errorf("id %s carries %v, row created %v", id, got, at)
		}
		sample = append(sample, id)
	}
	if err := ids.Err(); err != nil {
		t.Fatal(err)
	}
	for _, id := range sample {
		if _, err := st.GetPrompt(ctx, orgA, id); err != nil {
			t.Errorf("A's row %s not found by its tenant after the upgrade: %v", id, err)
		}
		if _, err := st.GetPrompt(ctx, orgB, id); err == nil {
			t.Errorf("A's row %s found under B after the upgrade", id)
		}
	}
}
