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

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// Migration 00009 turns a prompts table holding rows into a partitioned one
// without copying them, resumed after an interruption between its steps;
// then tenants still see only their own rows, through the parent, in the
// old rows and the new; the partitions show nothing to the app role; the
// writer's fresh and idempotent inserts land; and a row no day partition
// covers waits in the default partition until its day is created.
func TestPromptsPartitionedMigration(t *testing.T) {
	ownerDSN, appDSN := storetest.ScratchDatabase(t)
	ctx := context.Background()
	if _, err := store.MigrateToForTest(ctx, ownerDSN, 8); err != nil {
		t.Fatal(err)
	}
	owner, err := pgxpool.New(ctx, ownerDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	orgA, orgB := uuid.New(), uuid.New()
	if _, err := owner.Exec(ctx, `INSERT INTO organizations (id, name) VALUES ($1, 'a'), ($2, 'b')`, orgA, orgB); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	times := []time.Time{now.AddDate(-2, 0, 0), now.AddDate(0, 0, -40), now.Add(-time.Hour), now}
	for i, ts := range times {
		for _, org := range []uuid.UUID{orgA, orgB} {
			if _, err := owner.Exec(ctx, `INSERT INTO prompts (organization_id, id, request_id, model, status, created_at, prompt_text)
				VALUES ($1, $2, $3, 'm', 200, $4, $5)`, org, store.NewRowID(ts), fmt.Sprintf("old-%d", i), ts, "text of "+org.String()); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Step 1 ran, then the migration was cut short: the bound exists, not
	// yet validated.
	cutoff := now.Truncate(24*time.Hour).AddDate(0, 0, 2)
	if _, err := owner.Exec(ctx, fmt.Sprintf(`ALTER TABLE prompts ADD CONSTRAINT prompts_before_%s CHECK (created_at < '%s') NOT VALID`,
		cutoff.Format("20060102"), cutoff.Format(time.RFC3339))); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Migrate(ctx, ownerDSN); err != nil {
		t.Fatalf("resuming the migration: %v", err)
	}

	var partitioned bool
	if err := owner.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_partitioned_table WHERE partrelid = 'prompts'::regclass)`).Scan(&partitioned); err != nil || !partitioned {
		t.Fatalf("prompts partitioned = %v, %v", partitioned, err)
	}
	var bound string
	if err := owner.QueryRow(ctx, `SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = 'prompts_legacy' AND relispartition`).Scan(&bound); err != nil {
		t.Fatalf("prompts_legacy is not a partition: %v", err)
	}
	t.Logf("prompts_legacy %s", bound)
	var legacyRows, days int
	if err := owner.QueryRow(ctx, `SELECT count(*) FROM prompts_legacy`).Scan(&legacyRows); err != nil || legacyRows != 8 {
		t.Errorf("prompts_legacy holds %d rows (%v), want the 8 stored before", legacyRows, err)
	}
	if err := owner.QueryRow(ctx, `SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'prompts'::regclass AND c.relname ~ '^prompts_[0-9]{8}$'`).Scan(&days); err != nil || days < 12 {
		t.Errorf("%d day partitions (%v), want two weeks ahead of the cutoff", days, err)
	}
	var pkey string
	if err := owner.QueryRow(ctx, `SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'prompts'::regclass AND conname = 'prompts_pkey'`).Scan(&pkey); err != nil ||
		pkey != "PRIMARY KEY (organization_id, created_at, id)" {
		t.Errorf("prompts_pkey = %q, %v", pkey, err)
	}

	// Every partition: forced RLS, the parent's policy, nothing granted to
	// the app role.
	rows, _ := owner.Query(ctx, `SELECT c.relname, c.relrowsecurity AND c.relforcerowsecurity,
			(SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid),
			has_table_privilege('bulkhead_app', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
		FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'prompts'::regclass`)
	type part struct {
		Name     string
		Forced   bool
		Policies int
		AppPriv  bool
	}
	parts, err := pgx.CollectRows(rows, pgx.RowToStructByPos[part])
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		if !p.Forced || p.Policies != 1 || p.AppPriv {
			t.Errorf("partition %s: forced RLS %v, %d policies, app privilege %v; want true, 1, false", p.Name, p.Forced, p.Policies, p.AppPriv)
		}
	}

	st, err := store.Open(ctx, appDSN, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// B sees its own 4 old rows through the parent, none of A's.
	err = st.InTenant(ctx, orgB, func(tx pgx.Tx) error {
		var all, ofA int
		if err := tx.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE organization_id <> $1 OR prompt_text LIKE '%'||$2::text) FROM prompts`,
			orgB, orgA.String()).Scan(&all, &ofA); err != nil {
			return err
		}
		if all != 4 || ofA != 0 {
			t.Errorf("B's context sees %d rows, %d of A's; want 4, 0", all, ofA)
		}
		// The partitions themselves are closed to the app role.
		for _, p := range parts {
			_, err := tx.Exec(ctx, `SAVEPOINT s`)
			if err != nil {
				return err
			}
			var n int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{p.Name}.Sanitize()).Scan(&n); err == nil {
				t.Errorf("the app role read partition %s directly (%d rows)", p.Name, n)
			}
			if _, err := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT s`); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// The writer: today's rows, one in the legacy range, and one 30 days
	// ahead, beyond the day partitions: the default partition takes it.
	ahead := now.AddDate(0, 0, 30)
	w := startWriter(t, st, store.WriterOptions{SpoolDir: t.TempDir()})
	for i, ts := range []time.Time{now, now.AddDate(0, 0, -3), ahead} {
		w.Record(store.LogRecord{OrgID: orgA, RequestID: fmt.Sprintf("new-%d", i), Model: "m", Status: 200, CreatedAt: ts, Prompt: "p"})
	}
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
	if s := w.Stats(); s.Written != 3 || s.DeadLetters != 0 {
		t.Fatalf("writer stats %+v, want 3 written", s)
	}
	var inDefault int
	if err := owner.QueryRow(ctx, `SELECT count(*) FROM prompts_default`).Scan(&inDefault); err != nil || inDefault != 1 {
		t.Errorf("prompts_default holds %d rows (%v), want the one 30 days ahead", inDefault, err)
	}
	// The app role creates the day partitions; the waiting row moves into
	// its day's; a second call has nothing to do.
	app, err := pgx.Connect(ctx, appDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(ctx)
	var created int
	if err := app.QueryRow(ctx, `SELECT prompts_create_partitions(40)`).Scan(&created); err != nil || created == 0 {
		t.Fatalf("prompts_create_partitions(40) = %d, %v", created, err)
	}
	if err := app.QueryRow(ctx, `SELECT prompts_create_partitions(40)`).Scan(&created); err != nil || created != 0 {
		t.Errorf("second prompts_create_partitions(40) = %d, %v; want 0", created, err)
	}
	// Inside a tenant's context it refuses: maintenance is no tenant's
	// operation (THREATS 5).
	err = st.InTenant(ctx, orgA, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `SELECT prompts_create_partitions(40)`)
		return err
	})
	if !errors.Is(err, store.ErrForbidden) {
		t.Errorf("prompts_create_partitions in a tenant context: %v, want ErrForbidden", err)
	}
	var where string
	if err := owner.QueryRow(ctx, `SELECT tableoid::regclass::text FROM prompts WHERE request_id = 'new-2'`).Scan(&where); err != nil ||
		where != "prompts_"+ahead.Format("20060102") {
		t.Errorf("the row 30 days ahead is in %q (%v), want its day's partition", where, err)
	}
	var total int
	if err := owner.QueryRow(ctx, `SELECT count(*) FROM prompts`).Scan(&total); err != nil || total != 11 {
		t.Errorf("%d rows in all (%v), want 11", total, err)
	}
}

// The writer creates the day partitions ahead before it writes: with the
// furthest one dropped, a batch brings it back.
func TestWriterCreatesDayPartitions(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	ctx := context.Background()
	want := "prompts_" + time.Now().UTC().AddDate(0, 0, 14).Format("20060102")
	if _, err := owner.Exec(ctx, `DROP TABLE IF EXISTS `+pgx.Identifier{want}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	org := newOrgs(t, owner, 1)[0]
	w := startWriter(t, st, store.WriterOptions{})
	w.Record(rec(org, "pt"+uuid.NewString()[:8], 1))
	waitFor(t, 10*time.Second, "the batch", func() bool { return w.Stats().Written == 1 })
	var exists bool
	if err := owner.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, want).Scan(&exists); err != nil || !exists {
		t.Errorf("partition %s after a batch: exists=%v (%v), want it created", want, exists, err)
	}
}
