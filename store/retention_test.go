package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// pastDays replaces the (empty) legacy partition of a fresh database with
// day partitions for each of the last n days, as a database partitioned
// for that long would have.
func pastDays(t *testing.T, owner *pgxpool.Pool, n int) {
	t.Helper()
	_, err := owner.Exec(context.Background(), fmt.Sprintf(`DO $$
DECLARE d date; i int; part text;
BEGIN
  ALTER TABLE prompts DETACH PARTITION prompts_legacy;
  DROP TABLE prompts_legacy;
  FOR i IN 1..%d LOOP
    d := (now() AT TIME ZONE 'UTC')::date - i;
    part := 'prompts_' || to_char(d, 'YYYYMMDD');
    EXECUTE format('CREATE TABLE %%I PARTITION OF prompts FOR VALUES FROM (%%L) TO (%%L)', part,
      d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
    EXECUTE format('ALTER TABLE %%I ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY', part);
  END LOOP;
END $$`, n))
	if err != nil {
		t.Fatal(err)
	}
}

// Retention: each organization's rows older than its retention (its own,
// else the installation's default) disappear and everyone else's stay;
// whole day partitions go where every row in them is due; the steps are
// bounded and audited; a second run finds nothing; the app role runs it,
// but not inside a tenant's context.
func TestRetention(t *testing.T) {
	ownerDSN, appDSN := storetest.ScratchDatabase(t)
	ctx := context.Background()
	if _, err := store.Migrate(ctx, ownerDSN); err != nil {
		t.Fatal(err)
	}
	owner, err := pgxpool.New(ctx, ownerDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	pastDays(t, owner, 60)

	admin, err := store.OpenAdmin(ctx, ownerDSN, "test:retention")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if changed, err := admin.SetDefaultRetention(ctx, 30); err != nil || !changed {
		t.Fatalf("SetDefaultRetention(30d) = %v, %v", changed, err)
	}
	if changed, err := admin.SetDefaultRetention(ctx, 30); err != nil || changed {
		t.Errorf("SetDefaultRetention(30d) again = %v, %v; want no change", changed, err)
	}
	org := func(name string, r *store.Retention) uuid.UUID {
		o, err := admin.CreateOrg(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if r != nil {
			if _, err := admin.UpdateOrg(ctx, o.ID, store.OrgChanges{Retention: r}); err != nil {
				t.Fatal(err)
			}
		}
		return o.ID
	}
	week, forever := store.Retention(7), store.Forever
	a := org("a: 7 days", &week)
	b := org("b: the default, 30 days", nil)
	c := org("c: forever", &forever)
	d := org("d: the default, alone in its day", nil)
	now := time.Now().UTC()
	day := 24 * time.Hour
	put := func(o uuid.UUID, age time.Duration, n int) {
		t.Helper()
		ts := now.Add(-age)
		if _, err := owner.Exec(ctx, `INSERT INTO prompts (organization_id, id, request_id, model, status, created_at)
			SELECT $1, prompts_row_id($2::timestamptz + g * interval '1 microsecond', gen_random_uuid()), 'r'||g, 'm', 200,
			       $2::timestamptz + g * interval '1 microsecond'
			FROM generate_series(1, $3) g`, o, ts, n); err != nil {
			t.Fatal(err)
		}
	}
	put(a, day, 1)
	put(a, 10*day, 1)
	put(a, 20*day, 12000) // more than one step's 5,000
	put(a, 40*day, 1)
	put(b, day, 1)
	put(b, 10*day, 1)
	put(b, 40*day, 1)
	put(c, 40*day, 1)
	put(d, 45*day, 1)

	app, err := store.Open(ctx, appDSN, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	err = app.InTenant(ctx, a, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `SELECT * FROM prompts_apply_retention(10)`)
		return err
	})
	if !errors.Is(err, store.ErrForbidden) {
		t.Errorf("retention inside a tenant context: %v, want ErrForbidden", err)
	}

	res, err := app.ApplyRetention(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Days 60..41 ago: empty, or d's one row (30 days, due): dropped; 40
	// days ago holds c's row, kept forever: the drops stop there.
	if res.PartitionsDropped != 20 || res.RowsDeleted != 12000+3 {
		t.Errorf("first run %+v, want 20 partitions dropped and 12,003 rows deleted (a's 10, 20 and 40 days old, b's 40)", res)
	}
	count := func(o uuid.UUID) int {
		var n int
		if err := owner.QueryRow(ctx, `SELECT count(*) FROM prompts WHERE organization_id = $1`, o).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, w := range []struct {
		name string
		org  uuid.UUID
		want int
	}{{"a (7 days)", a, 1}, {"b (default 30 days)", b, 2}, {"c (forever)", c, 1}, {"d (default, its day dropped)", d, 0}} {
		if n := count(w.org); n != w.want {
			t.Errorf("%s: %d rows left, want %d", w.name, n, w.want)
		}
	}
	var runs, ofA, ofB, ofC int
	if err := owner.QueryRow(ctx, `SELECT count(*) FILTER (WHERE action = 'retention.run' AND organization_id IS NULL),
		coalesce(sum((details->>'rows_deleted')::int) FILTER (WHERE action = 'retention.delete' AND organization_id = $1), 0),
		coalesce(sum((details->>'rows_deleted')::int) FILTER (WHERE action = 'retention.delete' AND organization_id = $2), 0),
		count(*) FILTER (WHERE action = 'retention.delete' AND organization_id = $3)
		FROM audit_log`, a, b, c).Scan(&runs, &ofA, &ofB, &ofC); err != nil {
		t.Fatal(err)
	}
	if runs < 3 || ofA != 12002 || ofB != 1 || ofC != 0 {
		t.Errorf("audit: %d run rows (want a step each, >= 3), %d of a's rows, %d of b's, %d rows for c; want 12002, 1, 0", runs, ofA, ofB, ofC)
	}
	again, err := app.ApplyRetention(ctx)
	if err != nil || again != (store.RetentionResult{}) {
		t.Errorf("second run: %+v, %v; want nothing to do", again, err)
	}
}

// RunRetention, the gateway's loop, applies what the database records
// without being asked, and returns nil when its context ends.
func TestRunRetentionLoop(t *testing.T) {
	ownerDSN, appDSN := storetest.ScratchDatabase(t)
	ctx := context.Background()
	if _, err := store.Migrate(ctx, ownerDSN); err != nil {
		t.Fatal(err)
	}
	admin, err := store.OpenAdmin(ctx, ownerDSN, "test:retention")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.SetDefaultRetention(ctx, 2); err != nil {
		t.Fatal(err)
	}
	o, err := admin.CreateOrg(ctx, "loop")
	if err != nil {
		t.Fatal(err)
	}
	owner, err := pgxpool.New(ctx, ownerDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	if _, err := owner.Exec(ctx, `INSERT INTO prompts (organization_id, id, request_id, model, status, created_at)
		VALUES ($1, prompts_row_id(now() - interval '5 days', gen_random_uuid()), 'old', 'm', 200, now() - interval '5 days'),
		       ($1, prompts_row_id(now(), gen_random_uuid()), 'new', 'm', 200, now())`, o.ID); err != nil {
		t.Fatal(err)
	}
	app, err := store.Open(ctx, appDSN, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	lctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- app.RunRetention(lctx, 50*time.Millisecond, zap.NewNop()) }()
	waitFor(t, 10*time.Second, "the old row to go", func() bool {
		var n int
		_ = owner.QueryRow(ctx, `SELECT count(*) FROM prompts WHERE organization_id = $1 AND request_id = 'old'`, o.ID).Scan(&n)
		return n == 0
	})
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("RunRetention returned %v after its context ended, want nil", err)
	}
	var kept int
	if err := owner.QueryRow(ctx, `SELECT count(*) FROM prompts WHERE organization_id = $1 AND request_id = 'new'`, o.ID).Scan(&kept); err != nil || kept != 1 {
		t.Errorf("today's row: %d (%v), want kept", kept, err)
	}
}
