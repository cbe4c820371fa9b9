package store_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// The app role may not UPDATE or DELETE most tenant rows at all, so its
// cross-tenant attempts fail on privileges before RLS is asked. Here a
// probe role that holds UPDATE and DELETE on every tenant table (and is
// neither superuser nor BYPASSRLS), in a scratch database, tries: RLS alone
// must confine it to the tenant of its transaction (THREATS 9, 10).
func TestRLSConfinesPrivilegedUpdatesAndDeletes(t *testing.T) {
	ownerDSN, _ := storetest.ScratchDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := store.Migrate(ctx, ownerDSN); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(ownerDSN)
	db := strings.TrimPrefix(u.Path, "/")
	probe := "bulkhead_probe_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	if err := storetest.Superuser(db, "CREATE ROLE "+probe+" NOLOGIN NOSUPERUSER NOBYPASSRLS; "+
		"GRANT USAGE ON SCHEMA public TO "+probe+"; "+
		"GRANT SELECT, UPDATE, DELETE ON organizations, api_keys, prompts TO "+probe+"; "+
		"GRANT "+probe+" TO bulkhead_owner;"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := storetest.Superuser(db, "DROP OWNED BY "+probe+"; DROP ROLE "+probe); err != nil {
			t.Errorf("dropping the probe role: %v", err)
		}
	})

	conn, err := pgx.Connect(ctx, ownerDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	a, b := uuid.New(), uuid.New()
	const rows = 5
	if _, err := conn.Exec(ctx, `INSERT INTO organizations (id, name) VALUES ($1, 'a'), ($2, 'b')`, a, b); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO api_keys (organization_id, key_hash, display_prefix, name, rate_limit_per_minute)
		SELECT o, sha256(o::text::bytea), 'sk_', 'k', 60 FROM unnest($1::uuid[]) o`, []uuid.UUID{a, b}); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO prompts (organization_id, request_id, model, status)
		SELECT o, 'p-' || g, 'm', 200 FROM unnest($1::uuid[]) o, generate_series(1, $2) g`, []uuid.UUID{a, b}, rows); err != nil {
		t.Fatal(err)
	}

	// as runs fn as the probe role in a transaction with tenant (uuid.Nil:
	// no context), and rolls back.
	as := func(tenant uuid.UUID, fn func(tx pgx.Tx)) {
		t.Helper()
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx) //nolint:errcheck // every probe is undone
		if _, err := tx.Exec(ctx, "SET LOCAL ROLE "+probe); err != nil {
			t.Fatal(err)
		}
		if tenant != uuid.Nil {
			if _, err := tx.Exec(ctx, `SELECT set_config('app.current_tenant_id', $1, true)`, tenant.String()); err != nil {
				t.Fatal(err)
			}
		}
		fn(tx)
	}
	affected := func(tx pgx.Tx, sql string, args ...any) int64 {
		t.Helper()
		tag, err := tx.Exec(ctx, sql, args...)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return tag.RowsAffected()
	}
	refusedByRLS := func(tx pgx.Tx, sql string, args ...any) {
		t.Helper()
		_, err := tx.Exec(ctx, "SAVEPOINT s")
		if err != nil {
			t.Fatal(err)
		}
		_, err = tx.Exec(ctx, sql, args...)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" || !strings.Contains(pgErr.Message, "row-level security") {
			t.Errorf("%s: %v, want a row-level security refusal", sql, err)
		}
		if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT s"); err != nil {
			t.Fatal(err)
		}
	}

	as(a, func(tx pgx.Tx) {
		for _, c := range []struct {
			sql  string
			want int64
		}{
			{`UPDATE prompts SET model = 'x' WHERE organization_id = $1`, 0},
			{`DELETE FROM prompts WHERE organization_id = $1`, 0},
			{`UPDATE api_keys SET rate_limit_per_minute = 1 WHERE organization_id = $1`, 0},
			{`DELETE FROM api_keys WHERE organization_id = $1 RETURNING id`, 0},
			{`UPDATE organizations SET name = 'x' WHERE id = $1`, 0},
			{`DELETE FROM organizations WHERE id = $1`, 0},
		} {
			if n := affected(tx, c.sql, b); n != c.want {
				t.Errorf("tenant A: %s with B's id affected %d rows, want %d", c.sql, n, c.want)
			}
		}
		// Unfiltered: only A's own rows.
		if n := affected(tx, `UPDATE prompts SET model = 'x'`); n != rows {
			t.Errorf("tenant A: unfiltered UPDATE affected %d rows, want its own %d", n, rows)
		}
		refusedByRLS(tx, `UPDATE prompts SET organization_id = $1`, b)
		refusedByRLS(tx, `UPDATE api_keys SET organization_id = $1`, b)
		if n := affected(tx, `DELETE FROM prompts`); n != rows {
			t.Errorf("tenant A: unfiltered DELETE affected %d rows, want its own %d", n, rows)
		}
	})
	as(uuid.Nil, func(tx pgx.Tx) {
		for _, sql := range []string{`UPDATE prompts SET model = 'x'`, `DELETE FROM api_keys`, `UPDATE organizations SET name = 'x'`} {
			if n := affected(tx, sql); n != 0 {
				t.Errorf("no tenant context: %s affected %d rows, want 0", sql, n)
			}
		}
	})
	var left int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM prompts WHERE organization_id = $1 AND model = 'm'`, b).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != rows {
		t.Errorf("B has %d untouched rows, want %d", left, rows)
	}
}
