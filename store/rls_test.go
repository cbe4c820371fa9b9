package store_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// tenantTables are the tables holding tenant rows, with the column that
// names the tenant.
var tenantTables = map[string]string{
	"organizations": "id",
	"api_keys":      "organization_id",
	"prompts":       "organization_id",
	"audit_log":     "organization_id",
	// The wrapped data keys (00012): forced RLS like the rest, SELECT only.
	"organization_keys": "organization_id",
	// The control plane's idempotency records (00013).
	"control_idempotency": "organization_id",
	// The hourly usage rollups (00015), written by a trigger only.
	"usage_hourly": "organization_id",
	// The hourly rollup by end user (data-plane 00002), written by the same trigger.
	"usage_hourly_user": "organization_id",
	// Budgets and the alerts already sent (00017).
	"budgets":       "organization_id",
	"budget_alerts": "organization_id",
	// The budgets' counters in PostgreSQL (00020), written by the gateway.
	"budget_counters": "organization_id",
	// Their daily sums (data-plane 00003), and the end users' (data-plane
	// 00004), written by the same trigger and usage_roll_days only.
	"usage_daily":      "organization_id",
	"usage_daily_user": "organization_id",
	// The end users' monthly sums (data-plane 00005), written by the same
	// trigger and usage_roll_days only.
	"usage_monthly_user": "organization_id",
	// The model catalog and its access rules (00011).
	"models":       "organization_id",
	"model_access": "organization_id",
	// Organization-scoped admin keys (00018), read by the app role only.
	"org_admin_keys": "organization_id",
}

// sharedTables are the tenant tables that also hold shared rows
// (organization_id NULL, readable in every tenant context; 00011): their
// one policy reads them through sharedPolicy and writes like
// tenantPolicy.
var sharedTables = map[string]bool{"models": true}

// seeded is what seedTenant wrote for one organization.
type seeded struct {
	org     uuid.UUID
	keyID   uuid.UUID
	prompts int
}

// seedTenant creates an organization with one key, two prompts (of an
// end user, in the last hour the daily rollups hold) and an audit row, as
// the owner, inside the organization's own context.
func seedTenant(t *testing.T, owner *pgxpool.Pool) seeded {
	t.Helper()
	ctx := context.Background()
	s := seeded{org: uuid.New(), keyID: uuid.New(), prompts: 2}
	hash := make([]byte, 32)
	rand.Read(hash)
	err := pgx.BeginFunc(ctx, owner, func(tx pgx.Tx) error {
		stmts := []struct {
			sql  string
			args []any
		}{
			{`SELECT set_config('app.current_tenant_id', $1, true)`, []any{s.org.String()}},
			{`INSERT INTO organizations (id, name) VALUES ($1, $2)`, []any{s.org, "seed " + s.org.String()}},
			{`INSERT INTO api_keys (organization_id, id, key_hash, display_prefix, name, rate_limit_per_minute)
			  VALUES ($1, $2, $3, 'sk_seed', 'seed key', 60)`, []any{s.org, s.keyID, hash}},
			// An hour before the days the daily rollups hold end, so that
			// the trigger writes every rollup: usage_hourly and
			// usage_daily, and the end user's.
			{`INSERT INTO prompts (organization_id, request_id, api_key_id, model, prompt_text, response, status, end_user, created_at, id)
			  SELECT $1, 'req-' || g, $2, 'gpt-4o-mini', 'secret prompt', 'answer', 200, 'seed-user', t, prompts_row_id(t, gen_random_uuid())
			  FROM generate_series(1, $3::int) g, (SELECT daily_through - interval '1 hour' AS t FROM usage_rollup_state) w`, []any{s.org, s.keyID, s.prompts}},
			{`INSERT INTO audit_log (organization_id, actor, action) VALUES ($1, 'seed', 'seed')`, []any{s.org}},
		}
		for _, st := range stmts {
			if _, err := tx.Exec(ctx, st.sql, st.args...); err != nil {
				return fmt.Errorf("%s: %w", st.sql, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("seeding: %v", err)
	}
	return s
}

// ownerCount counts a tenant's rows in table, bypassing RLS.
func ownerCount(t *testing.T, owner *pgxpool.Pool, table string, org uuid.UUID) int {
	t.Helper()
	var n int
	q := fmt.Sprintf("SELECT count(*) FROM %s WHERE %s = $1", table, tenantTables[table])
	if err := owner.QueryRow(context.Background(), q, org).Scan(&n); err != nil {
		t.Fatalf("counting %s: %v", table, err)
	}
	return n
}

// appPrivileges is everything the app role may do outside pg_catalog and
// information_schema, whether granted to it, to PUBLIC or to a role it is a
// member of: the grants of migration 00001, USAGE on the schema and the
// database's CONNECT and TEMPORARY (deploy/dev/services.sh), and EXECUTE
// on the functions that keep PostgreSQL's default (PUBLIC): the trigger
// function of audit_log and prompts_row_id, the default of prompts.id that
// the app role's inserts evaluate; and prompts_create_partitions, which the
// gateway runs to create the request log's day partitions ahead (00009:
// it takes no tenant input and creates only the next days' empty
// partitions); and prompts_apply_retention, which the gateway runs to
// apply the retentions the operator set (00010: it reads them from the
// database, takes only a batch size, and refuses a tenant context);
// SELECT on organization_keys, the tenant's wrapped data keys, which the
// writer and the read API unwrap in process (00012: forced RLS confines it
// to the tenant in context; no INSERT, UPDATE or DELETE, so the gateway
// can neither substitute a key nor destroy one); and SELECT on
// seal_kek_check, a constant sealed under the KEK that serve verifies at
// start (no tenant data); prompts_apply_placed_retention, the same for the
// organizations placed in a schema of their own (00016).
// The control plane (00013): a tenant administrator's key actions run as
// the app role inside its own tenant context, so it inserts keys and
// updates their limits, expiry and revocation (never their hash or
// organization), and reads and appends its idempotency records.
// usage_hourly is read-only to it: the prompts_rollup trigger writes it
// from the rows an insert added (00015), so no gateway writes usage that no
// request made. SELECT on the model catalog and its access rules (00011:
// the gateway reads what its tenant may use; the operator alone writes
// them). The budgets' counters (00020): the gateway leases dollars from
// them, gives leases back and builds them from the request log when Redis
// is not there, so it reads, inserts, updates and deletes them, its own
// organization's alone (forced RLS; TestBudgetCountersConfined), and runs
// budget_counter_lease, SECURITY INVOKER: RLS applies to it as to the app
// role's own statements. Anything more is a new way to reach
// tenant data and must be added here, on purpose, with its reason.
var appPrivileges = []string{
	"column api_keys.display_prefix: INSERT",
	"column api_keys.expires_at: INSERT, UPDATE",
	"column api_keys.key_hash: INSERT",
	"column api_keys.last_used_at: UPDATE",
	"column api_keys.name: INSERT",
	"column api_keys.organization_id: INSERT",
	"column api_keys.rate_limit_per_minute: INSERT, UPDATE",
	"column api_keys.revoked_at: UPDATE",
	"column api_keys.tokens_per_minute: INSERT, UPDATE",
	"database: CONNECT, TEMPORARY",
	"function audit_log_append_only(): EXECUTE",
	"function budget_counter_lease(uuid,bigint,bigint,uuid[],bigint[],bigint[],bigint[],bigint[],bigint[],bigint[],bigint[],bigint[]): EXECUTE",
	"function prompts_apply_placed_retention(integer): EXECUTE",
	"function prompts_apply_retention(integer): EXECUTE",
	"function prompts_create_partitions(integer): EXECUTE",
	"function prompts_row_id(timestamp with time zone,uuid): EXECUTE",
	"function usage_roll_days(): EXECUTE",
	"schema public: USAGE",
	"table api_keys: SELECT",
	"table audit_log: INSERT",
	"table budget_alerts: INSERT, SELECT",
	"table budget_counters: DELETE, INSERT, SELECT, UPDATE",
	"table budgets: SELECT",
	"table control_idempotency: INSERT, SELECT",
	"table model_access: SELECT",
	"table models: SELECT",
	"table org_admin_keys: SELECT",
	"table organization_keys: SELECT",
	"table organizations: SELECT",
	"table prompts: INSERT, SELECT",
	"table seal_kek_check: SELECT",
	"table usage_daily: SELECT",
	"table usage_daily_user: SELECT",
	"table usage_hourly: SELECT",
	"table usage_hourly_user: SELECT",
	"table usage_monthly_user: SELECT",
	"table usage_rollup_state: SELECT",
}

// appPrivilegesSQL lists the current role's effective privileges, one row
// per object: the ACL of the database, of every schema, table, view,
// sequence, column and function outside the system schemas (a NULL ACL
// read as the object type's default), restricted to the grantees the role
// acts as: PUBLIC (0) and every role it is a member of, itself included.
const appPrivilegesSQL = `
WITH me AS (SELECT oid FROM pg_roles WHERE pg_has_role(current_user, oid, 'MEMBER')),
user_ns AS (
	SELECT oid, nspname FROM pg_namespace
	WHERE nspname NOT IN ('pg_catalog', 'information_schema')
	  AND nspname NOT LIKE 'pg\_toast%' AND nspname NOT LIKE 'pg\_temp\_%'
	  AND nspname !~ '^t_[0-9a-f]{32}$'), -- tenant schemas: TestPlaceCatalog
acls AS (
	SELECT 'database' AS obj, coalesce(datacl, acldefault('d'::"char", datdba)) AS acl
	FROM pg_database WHERE datname = current_database()
	UNION ALL
	SELECT 'schema ' || nspname, coalesce(nspacl, acldefault('n'::"char", nspowner))
	FROM pg_namespace WHERE oid IN (SELECT oid FROM user_ns)
	UNION ALL
	SELECT CASE WHEN c.relkind = 'S' THEN 'sequence ' ELSE 'table ' END || c.oid::regclass::text,
	       coalesce(c.relacl, acldefault((CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END)::"char", c.relowner))
	FROM pg_class c
	WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND c.relnamespace IN (SELECT oid FROM user_ns)
	UNION ALL
	SELECT 'column ' || c.oid::regclass::text || '.' || a.attname, a.attacl
	FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
	WHERE a.attacl IS NOT NULL AND NOT a.attisdropped AND c.relnamespace IN (SELECT oid FROM user_ns)
	UNION ALL
	SELECT 'function ' || p.oid::regprocedure::text, coalesce(p.proacl, acldefault('f'::"char", p.proowner))
	FROM pg_proc p WHERE p.pronamespace IN (SELECT oid FROM user_ns))
SELECT obj || ': ' || string_agg(DISTINCT x.privilege_type, ', ' ORDER BY x.privilege_type)
FROM acls, LATERAL aclexplode(acls.acl) x
WHERE x.grantee = 0 OR x.grantee IN (SELECT oid FROM me)
GROUP BY obj ORDER BY 1`

// tenantPolicy is the one policy every tenant table has, as migration
// 00001 writes it for a tenant column col.
func tenantPolicy(col string) string {
	return col + ` = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid)`
}

// sharedPolicy is the read side of the policy of a table with shared
// rows: its own rows, and the shared ones, only in a tenant context.
func sharedPolicy(col string) string {
	return `coalesce(` + col + `, (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid)) = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid)`
}

// Test 1: the catalog is what the isolation model assumes.
func TestCatalog(t *testing.T) {
	storetest.Migrate(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, storetest.AppDSN())
	if err != nil {
		storetest.Unavailable(t, "PostgreSQL (app role)", err)
	}
	defer conn.Close(ctx)

	t.Run("app role is not privileged", func(t *testing.T) {
		var super, bypass, createRole, createDB bool
		err := conn.QueryRow(ctx, `SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user`).
			Scan(&super, &bypass, &createRole, &createDB)
		if err != nil {
			t.Fatal(err)
		}
		if super || bypass || createRole || createDB {
			t.Errorf("app role: superuser=%v bypassrls=%v createrole=%v createdb=%v, want all false", super, bypass, createRole, createDB)
		}
		// Temporary objects (the app role may create them) die with
		// their session and are left out.
		rows, _ := conn.Query(ctx, `SELECT c.oid::regclass::text FROM pg_class c
			JOIN pg_roles r ON r.oid = c.relowner
			JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE pg_has_role(current_user, r.oid, 'MEMBER')
			  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
			  AND n.nspname NOT LIKE 'pg\_temp\_%' AND n.nspname NOT LIKE 'pg\_toast\_temp\_%'`)
		owned, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		if len(owned) > 0 {
			t.Errorf("app role owns %v, want nothing", owned)
		}
	})

	t.Run("every tenant table has forced RLS", func(t *testing.T) {
		rows, _ := conn.Query(ctx, `
			SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity
			FROM pg_class c
			WHERE c.relkind IN ('r', 'p') AND c.relnamespace = 'public'::regnamespace AND NOT c.relispartition
			  AND (EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'organization_id' AND NOT a.attisdropped)
			       OR c.relname = 'organizations')
			ORDER BY 1`)
		type tbl struct {
			Name            string
			Enabled, Forced bool
		}
		tables, err := pgx.CollectRows(rows, pgx.RowToStructByPos[tbl])
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, tb := range tables {
			seen[tb.Name] = true
			if _, ok := tenantTables[tb.Name]; !ok {
				t.Errorf("%s has a tenant column but is not among the tenant tables this test knows", tb.Name)
			}
			if !tb.Enabled || !tb.Forced {
				t.Errorf("%s: rls enabled=%v forced=%v, want both", tb.Name, tb.Enabled, tb.Forced)
			}
		}
		for name := range tenantTables {
			if !seen[name] {
				t.Errorf("tenant table %s not found by the catalog query", name)
			}
		}
	})

	// A partition is reached through its parent, whose policy applies;
	// reached directly, it holds whoever may reach it to a tenant: forced
	// RLS and the parent's one policy, and no grant to the app role (the
	// allowlist below).
	t.Run("every partition of a tenant table has forced RLS and one policy", func(t *testing.T) {
		rows, _ := conn.Query(ctx, `
			SELECT c.relname, p.relname, c.relrowsecurity AND c.relforcerowsecurity,
			       (SELECT count(*) FROM pg_policy pol WHERE pol.polrelid = c.oid)
			FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid JOIN pg_class p ON p.oid = i.inhparent
			WHERE c.relispartition AND c.relkind IN ('r', 'p') AND c.relnamespace = 'public'::regnamespace ORDER BY 1`)
		type part struct {
			Name, Parent string
			Forced       bool
			Policies     int
		}
		parts, err := pgx.CollectRows(rows, pgx.RowToStructByPos[part])
		if err != nil {
			t.Fatal(err)
		}
		if len(parts) == 0 {
			t.Fatal("no partition found: prompts is partitioned by day (migration 00009)")
		}
		for _, p := range parts {
			if _, ok := tenantTables[p.Parent]; !ok {
				t.Errorf("%s is a partition of %s, which is not among the tenant tables this test knows", p.Name, p.Parent)
			}
			if !p.Forced || p.Policies != 1 {
				t.Errorf("partition %s: forced RLS %v, %d policies; want true, 1", p.Name, p.Forced, p.Policies)
			}
		}
	})

	// Permissive policies are OR-ed: one more of them, or a looser
	// expression, opens the table whatever the others say. Each table must
	// have exactly the one policy of 00001, compared as PostgreSQL deparses
	// it (the reference is deparsed by the same server, from a temporary
	// table).
	t.Run("each tenant table has exactly its isolating policy", func(t *testing.T) {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `CREATE TEMP TABLE policy_reference (id uuid, organization_id uuid) ON COMMIT DROP`); err != nil {
				return err
			}
			for _, col := range []string{"id", "organization_id"} {
				e := tenantPolicy(col)
				if _, err := tx.Exec(ctx, `CREATE POLICY `+col+` ON pg_temp.policy_reference USING (`+e+`) WITH CHECK (`+e+`)`); err != nil {
					return err
				}
			}
			if _, err := tx.Exec(ctx, `CREATE POLICY shared ON pg_temp.policy_reference USING (`+sharedPolicy("organization_id")+`)`); err != nil {
				return err
			}
			type policy struct {
				Table, Name, Permissive, Cmd, Roles string
				Qual, WithCheck                     *string
			}
			rows, _ := tx.Query(ctx, `SELECT tablename::text, policyname::text, permissive, cmd, array_to_string(roles, ','), qual, with_check
				FROM pg_policies WHERE schemaname IN ('public', pg_my_temp_schema()::regnamespace::text) ORDER BY 1, 2`)
			all, err := pgx.CollectRows(rows, pgx.RowToStructByPos[policy])
			if err != nil {
				return err
			}
			want, got := map[string]string{}, map[string][]policy{}
			for _, p := range all {
				if p.Table == "policy_reference" {
					want[p.Name] = *p.Qual
					continue
				}
				got[p.Table] = append(got[p.Table], p)
			}
			// Partitions carry their parent's policy (checked to be one above).
			tables := maps.Clone(tenantTables)
			parts, _ := tx.Query(ctx, `SELECT c.relname::text, p.relname::text FROM pg_inherits i
				JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
				WHERE c.relkind IN ('r', 'p') AND c.relnamespace = 'public'::regnamespace`)
			var part, parent string
			if _, err := pgx.ForEachRow(parts, []any{&part, &parent}, func() error {
				tables[part] = tenantTables[parent]
				return nil
			}); err != nil {
				return err
			}
			for table, col := range tables {
				ps := got[table]
				if len(ps) != 1 {
					var names []string
					for _, p := range ps {
						names = append(names, p.Name)
					}
					t.Errorf("%s has %d policies %v, want exactly 1", table, len(ps), names)
				}
				for _, p := range ps {
					if p.Permissive != "PERMISSIVE" || p.Cmd != "ALL" || p.Roles != "public" {
						t.Errorf("%s policy %s: %s FOR %s TO %s, want PERMISSIVE FOR ALL TO public", table, p.Name, p.Permissive, p.Cmd, p.Roles)
					}
					using := want[col]
					if sharedTables[table] {
						using = want["shared"]
					}
					if p.Qual == nil || *p.Qual != using {
						t.Errorf("%s policy %s: USING %s, want %s", table, p.Name, deref(p.Qual), using)
					}
					if p.WithCheck == nil || *p.WithCheck != want[col] {
						t.Errorf("%s policy %s: WITH CHECK %s, want %s", table, p.Name, deref(p.WithCheck), want[col])
					}
				}
			}
			return errRollback
		})
		if !errors.Is(err, errRollback) {
			t.Fatal(err)
		}
	})

	t.Run("prompts' references trigger is in place", func(t *testing.T) {
		var enabled string
		err := conn.QueryRow(ctx, `SELECT tgenabled FROM pg_trigger
			WHERE tgrelid = 'prompts'::regclass AND tgname = 'prompts_check_references'`).Scan(&enabled)
		if err != nil || enabled != "O" {
			t.Errorf("prompts_check_references: enabled=%q, %v; want O (fires on every insert)", enabled, err)
		}
	})

	t.Run("SECURITY DEFINER functions pin search_path, PUBLIC cannot execute them (THREATS 5)", func(t *testing.T) {
		rows, _ := conn.Query(ctx, `SELECT p.proname FROM pg_proc p
			WHERE p.prosecdef AND p.pronamespace = 'public'::regnamespace
			  AND NOT coalesce(EXISTS (SELECT FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%, pg_temp'), false)`)
		bad, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		if len(bad) > 0 {
			t.Errorf("SECURITY DEFINER functions without search_path ending in pg_temp: %v", bad)
		}
		rows, _ = conn.Query(ctx, `SELECT p.proname FROM pg_proc p
			WHERE p.prosecdef AND p.pronamespace = 'public'::regnamespace AND has_function_privilege('public', p.oid, 'EXECUTE')`)
		bad, err = pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		if len(bad) > 0 {
			t.Errorf("SECURITY DEFINER functions PUBLIC may execute: %v", bad)
		}
	})

	// Exactly the allowlist: tables, columns, sequences, functions, schemas
	// and the database, through PUBLIC and role membership included.
	t.Run("app role privileges are exactly the allowlist", func(t *testing.T) {
		rows, _ := conn.Query(ctx, appPrivilegesSQL)
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]bool{}
		for _, p := range appPrivileges {
			want[p] = true
		}
		have := map[string]bool{}
		for _, p := range got {
			have[p] = true
			if !want[p] {
				t.Errorf("app role has %q, which is not in the allowlist", p)
			}
		}
		for _, p := range appPrivileges {
			if !have[p] {
				t.Errorf("app role lacks %q (allowlisted: the gateway needs it)", p)
			}
		}
		if _, err := conn.Exec(ctx, `TRUNCATE prompts`); !isCode(err, "42501") {
			t.Errorf("TRUNCATE prompts as app: err = %v, want permission denied", err)
		}
	})
}

var errRollback = errors.New("rolled back on purpose")

func deref(s *string) string {
	if s == nil {
		return "(none)"
	}
	return *s
}

func isCode(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}

// Test 2: with tenant A's context, an unfiltered SELECT returns only A's rows.
func TestTenantSeesOnlyItsRows(t *testing.T) {
	s := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	a, b := seedTenant(t, owner), seedTenant(t, owner)
	ctx := context.Background()

	for _, tenant := range []seeded{a, b} {
		err := s.InTenant(ctx, tenant.org, func(tx pgx.Tx) error {
			for table, col := range map[string]string{"organizations": "id", "api_keys": "organization_id", "prompts": "organization_id", "usage_hourly": "organization_id", "usage_daily": "organization_id", "usage_daily_user": "organization_id", "usage_monthly_user": "organization_id"} {
				rows, _ := tx.Query(ctx, "SELECT "+col+" FROM "+table) // deliberately no WHERE
				orgs, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
				if err != nil {
					return err
				}
				// usage_hourly: the seeded prompts' one hour.
				want := map[string]int{"organizations": 1, "api_keys": 1, "prompts": tenant.prompts, "usage_hourly": 1, "usage_daily": 1, "usage_daily_user": 1, "usage_monthly_user": 1}[table]
				if len(orgs) != want {
					t.Errorf("%s as %s: %d rows, want %d", table, tenant.org, len(orgs), want)
				}
				for _, o := range orgs {
					if o != tenant.org {
						t.Errorf("%s as %s: saw a row of %s", table, tenant.org, o)
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// audit_log is insert-only for the app role: not even its own rows.
	err := s.InTenant(ctx, a.org, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "SELECT * FROM audit_log")
		return err
	})
	if !errors.Is(err, store.ErrForbidden) {
		t.Errorf("SELECT audit_log as app: err = %v, want permission denied", err)
	}
}

// Test 3: without a tenant context, reads see nothing and writes fail, on a
// fresh connection and on one reused after a tenant transaction.
func TestNoContextSeesNothing(t *testing.T) {
	s := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	a := seedTenant(t, owner)
	ctx := context.Background()

	check := func(t *testing.T, conn *pgx.Conn) {
		t.Helper()
		for table := range tenantTables {
			if table == "audit_log" {
				continue
			}
			var n int
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
				t.Errorf("SELECT %s without context: %v", table, err)
			} else if n != 0 {
				t.Errorf("SELECT %s without context: %d rows, want 0", table, n)
			}
		}
		_, err := conn.Exec(ctx, `INSERT INTO prompts (organization_id, request_id, model, status) VALUES ($1, 'no-ctx', 'm', 200)`, a.org)
		if !isCode(err, "42501") {
			t.Errorf("INSERT prompts without context: err = %v, want an RLS violation", err)
		}
		_, err = conn.Exec(ctx, `INSERT INTO audit_log (organization_id, actor, action) VALUES ($1, 'x', 'x')`, a.org)
		if !isCode(err, "42501") {
			t.Errorf("INSERT audit_log without context: err = %v, want an RLS violation", err)
		}
	}

	t.Run("fresh connection", func(t *testing.T) {
		conn, err := pgx.Connect(ctx, storetest.AppDSN())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var setting *string
		if err := conn.QueryRow(ctx, `SELECT current_setting('app.current_tenant_id', true)`).Scan(&setting); err != nil {
			t.Fatal(err)
		}
		if setting != nil {
			t.Fatalf("fresh connection has a tenant setting %q", *setting)
		}
		check(t, conn)
	})

	t.Run("connection reused after a tenant transaction", func(t *testing.T) {
		one := storetest.Open(t, store.Options{MaxConns: 1})
		if err := one.InTenant(ctx, a.org, func(tx pgx.Tx) error { return nil }); err != nil {
			t.Fatal(err)
		}
		conn := acquireOnly(t, one)
		var setting string
		if err := conn.QueryRow(ctx, `SELECT coalesce(current_setting('app.current_tenant_id', true), '')`).Scan(&setting); err != nil {
			t.Fatal(err)
		}
		if setting != "" {
			t.Fatalf("setting leaked past the transaction: %q", setting)
		}
		check(t, conn)
	})
	_ = s
}

// acquireOnly hands out the single connection of a MaxConns=1 store: the
// one its last transaction ran on.
func acquireOnly(t *testing.T, s *store.Store) *pgx.Conn {
	t.Helper()
	c, err := store.AcquireForTest(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Release)
	return c.Conn()
}

// Test 4: under A's context, writing a row for B or moving A's row to B is
// refused: inserts by RLS's WITH CHECK (or the references trigger),
// updates and deletes by the missing privilege, which the catalog test
// pins down; TestRLSConfinesUpdates covers RLS on UPDATE where the app
// role has the privilege.
func TestCrossTenantWritesRejected(t *testing.T) {
	s := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	a, b := seedTenant(t, owner), seedTenant(t, owner)
	ctx := context.Background()

	const rls, noPrivilege = "new row violates row-level security policy", "permission denied for table"
	cases := []struct {
		name string
		sql  string
		args []any
		want error
		msg  string // what the refusal must say: which wall stopped it
	}{
		{"insert prompt for B", `INSERT INTO prompts (organization_id, request_id, model, status) VALUES ($1, 'x', 'm', 200)`, []any{b.org}, store.ErrForbidden, rls},
		{"insert audit row for B", `INSERT INTO audit_log (organization_id, actor, action) VALUES ($1, 'x', 'x')`, []any{b.org}, store.ErrForbidden, rls},
		{"insert prompt for A with B's key", `INSERT INTO prompts (organization_id, request_id, api_key_id, model, status) VALUES ($1, 'fk', $2, 'm', 200)`, []any{a.org, b.keyID}, store.ErrConflict, "not its organization's"},
		{"insert prompt for A with a random key", `INSERT INTO prompts (organization_id, request_id, api_key_id, model, status) VALUES ($1, 'fk', $2, 'm', 200)`, []any{a.org, uuid.New()}, store.ErrConflict, "not its organization's"},
		{"move A's prompt to B", `UPDATE prompts SET organization_id = $1`, []any{b.org}, store.ErrForbidden, noPrivilege},
		{"move A's key to B", `UPDATE api_keys SET organization_id = $1`, []any{b.org}, store.ErrForbidden, noPrivilege},
		{"rename A's organization id to B", `UPDATE organizations SET id = $1`, []any{b.org}, store.ErrForbidden, noPrivilege},
		{"delete B's prompts", `DELETE FROM prompts WHERE organization_id = $1`, []any{b.org}, store.ErrForbidden, noPrivilege},
		// Usage is written by the prompts_rollup trigger alone, never by
		// the gateway, not even its own tenant's.
		{"insert usage for A", `INSERT INTO usage_hourly (organization_id, hour, model, requests, errors, prompt_tokens, completion_tokens, usage_tokens, latency_ms)
			VALUES ($1, now(), 'm', 1, 0, 0, 0, 0, 0)`, []any{a.org}, store.ErrForbidden, noPrivilege},
		{"inflate B's usage", `UPDATE usage_hourly SET requests = requests + 1 WHERE organization_id = $1`, []any{b.org}, store.ErrForbidden, noPrivilege},
		{"erase A's usage", `DELETE FROM usage_hourly WHERE organization_id = $1`, []any{a.org}, store.ErrForbidden, noPrivilege},
		{"inflate B's daily usage", `UPDATE usage_daily SET requests = requests + 1 WHERE organization_id = $1`, []any{b.org}, store.ErrForbidden, noPrivilege},
		{"erase A's daily usage", `DELETE FROM usage_daily WHERE organization_id = $1`, []any{a.org}, store.ErrForbidden, noPrivilege},
		{"inflate B's end users' daily usage", `UPDATE usage_daily_user SET requests = requests + 1 WHERE organization_id = $1`, []any{b.org}, store.ErrForbidden, noPrivilege},
		{"inflate B's end users' monthly usage", `UPDATE usage_monthly_user SET cum_requests = cum_requests || 1::bigint WHERE organization_id = $1`, []any{b.org}, store.ErrForbidden, noPrivilege},
		{"move the daily rollups' end", `UPDATE usage_rollup_state SET daily_through = now() + interval '1 day'`, nil, store.ErrForbidden, noPrivilege},
		{"move the end users' rollups' end", `UPDATE usage_rollup_state SET user_through = now() + interval '1 day'`, nil, store.ErrForbidden, noPrivilege},
		// The budgets' counters (00020): the app role writes them, its
		// own organization's only (TestBudgetCountersConfined has the rest).
		{"insert a budget counter for B", `INSERT INTO budget_counters (organization_id, budget_id, generation, buckets, spends, expires_at)
			VALUES ($1, gen_random_uuid(), 1, '{1}', '{0}', now())`, []any{b.org}, store.ErrForbidden, rls},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := s.InTenant(ctx, a.org, func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, c.sql, c.args...)
				return err
			})
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("err = %v, want %v saying %q", err, c.want, c.msg)
			}
		})
	}
	for table := range tenantTables {
		if got := ownerCount(t, owner, table, b.org); got != map[string]int{"organizations": 1, "api_keys": 1, "prompts": b.prompts, "audit_log": 1, "usage_hourly": 1, "usage_daily": 1, "usage_hourly_user": 1, "usage_daily_user": 1, "usage_monthly_user": 1}[table] {
			t.Errorf("B's %s rows = %d after A's attempts", table, got)
		}
		if got := ownerCount(t, owner, table, a.org); got != map[string]int{"organizations": 1, "api_keys": 1, "prompts": a.prompts, "audit_log": 1, "usage_hourly": 1, "usage_daily": 1, "usage_hourly_user": 1, "usage_daily_user": 1, "usage_monthly_user": 1}[table] {
			t.Errorf("A's %s rows = %d after the rejected writes", table, got)
		}
	}
}

// RLS on UPDATE, exercised where the app role holds the privilege: its one
// column grant, UPDATE (last_used_at) on api_keys. A's context reaches
// only A's key, by id, by organization or unfiltered; without a context no
// key at all. An UPDATE that reads no column (no WHERE, no RETURNING) is
// checked by the UPDATE policies alone, so it is tried too, in
// transactions rolled back: should a policy open every row, it stamps
// nothing. (The one other table the app role may UPDATE and DELETE is
// budget_counters: TestBudgetCountersConfined. The owner role may not
// create another role: NOCREATEROLE.)
func TestRLSConfinesUpdates(t *testing.T) {
	s := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	a, b := seedTenant(t, owner), seedTenant(t, owner)
	ctx := context.Background()

	// update runs sql in tenant's context (none: uuid.Nil) and returns
	// the rows it touched; rollback undoes it.
	update := func(tenant uuid.UUID, rollback bool, sql string, args ...any) int64 {
		t.Helper()
		var n int64
		fn := func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, sql, args...)
			n = tag.RowsAffected()
			if err == nil && rollback {
				return errRollback
			}
			return err
		}
		var err error
		if tenant == uuid.Nil {
			conn, cerr := pgx.Connect(ctx, storetest.AppDSN())
			if cerr != nil {
				t.Fatal(cerr)
			}
			defer conn.Close(ctx)
			err = pgx.BeginFunc(ctx, conn, fn)
		} else {
			err = s.InTenant(ctx, tenant, fn)
		}
		if err != nil && !errors.Is(err, errRollback) {
			t.Fatalf("%s as %s: %v", sql, tenant, err)
		}
		return n
	}
	if n := update(a.org, false, `UPDATE api_keys SET last_used_at = now() WHERE id = $1`, b.keyID); n != 0 {
		t.Errorf("A updated %d of B's keys by id, want 0", n)
	}
	if n := update(a.org, false, `UPDATE api_keys SET last_used_at = now() WHERE organization_id = $1`, b.org); n != 0 {
		t.Errorf("A updated %d of B's keys by organization, want 0", n)
	}
	if n := update(a.org, true, `UPDATE api_keys SET last_used_at = now()`); n != 1 {
		t.Errorf("A's unfiltered UPDATE touched %d keys, want its 1", n)
	}
	var returned []uuid.UUID
	err := s.InTenant(ctx, a.org, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, `UPDATE api_keys SET last_used_at = now() RETURNING organization_id`)
		var err error
		returned, err = pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(returned) != 1 || returned[0] != a.org {
		t.Errorf("A's unfiltered UPDATE ... RETURNING touched the keys of %v, want only A's one key", returned)
	}
	if n := update(uuid.Nil, true, `UPDATE api_keys SET last_used_at = now()`); n != 0 {
		t.Errorf("an unfiltered UPDATE without a tenant context touched %d keys, want 0", n)
	}
	if n := update(uuid.Nil, false, `UPDATE api_keys SET last_used_at = now() WHERE id = ANY($1)`, []uuid.UUID{a.keyID, b.keyID}); n != 0 {
		t.Errorf("UPDATE by id without a tenant context touched %d keys, want 0", n)
	}

	used := func(key uuid.UUID) bool {
		var set bool
		if err := owner.QueryRow(ctx, `SELECT last_used_at IS NOT NULL FROM api_keys WHERE id = $1`, key).Scan(&set); err != nil {
			t.Fatal(err)
		}
		return set
	}
	if !used(a.keyID) || used(b.keyID) {
		t.Errorf("last_used_at set: A's key %v, B's key %v; want true, false", used(a.keyID), used(b.keyID))
	}
}

// audit_log is append-only for everyone: the app role lacks the privilege
// to UPDATE, DELETE or TRUNCATE it, and the owner, who has them, is refused
// by the table's triggers. Every attempt runs in a transaction that is
// rolled back, so a broken schema costs the test database nothing.
func TestAuditLogAppendOnly(t *testing.T) {
	s := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	a := seedTenant(t, owner)
	ctx := context.Background()
	statements := map[string]string{
		"UPDATE":   `UPDATE audit_log SET actor = 'forged' WHERE organization_id = '` + a.org.String() + `'`,
		"DELETE":   `DELETE FROM audit_log WHERE organization_id = '` + a.org.String() + `'`,
		"TRUNCATE": `TRUNCATE audit_log`,
	}
	for verb, sql := range statements {
		t.Run(verb+" as the owner", func(t *testing.T) {
			tx, err := owner.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx) //nolint:errcheck // rolled back whatever happened
			if _, err := tx.Exec(ctx, `SELECT set_config('app.current_tenant_id', $1, true)`, a.org.String()); err != nil {
				t.Fatal(err)
			}
			_, err = tx.Exec(ctx, sql)
			if !isCode(err, "42501") || !strings.Contains(err.Error(), "append-only") {
				t.Errorf("%s: err = %v, want the append-only refusal (42501)", sql, err)
			}
		})
		t.Run(verb+" as the app role", func(t *testing.T) {
			err := s.InTenant(ctx, a.org, func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, sql)
				if err == nil {
					return errRollback
				}
				return err
			})
			if !errors.Is(err, store.ErrForbidden) || !strings.Contains(err.Error(), "permission denied for table audit_log") {
				t.Errorf("%s: err = %v, want permission denied for table audit_log", sql, err)
			}
		})
	}
	if got := ownerCount(t, owner, "audit_log", a.org); got != 1 {
		t.Errorf("A has %d audit rows after the refused changes, want 1", got)
	}
}

// Test 5: many concurrent transactions alternating tenants over a pool of
// two connections never see the other tenant's rows or setting.
func TestConcurrentTenantsOverSmallPool(t *testing.T) {
	s := storetest.Open(t, store.Options{MaxConns: 2})
	owner := storetest.OwnerPool(t)
	tenants := []seeded{seedTenant(t, owner), seedTenant(t, owner)}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const n = 2000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			me := tenants[i%2]
			errs <- s.InTenant(ctx, me.org, func(tx pgx.Tx) error {
				var setting string
				if err := tx.QueryRow(ctx, `SELECT current_setting('app.current_tenant_id')`).Scan(&setting); err != nil {
					return err
				}
				if setting != me.org.String() {
					return fmt.Errorf("transaction %d for %s saw setting %s", i, me.org, setting)
				}
				rows, _ := tx.Query(ctx, `SELECT organization_id FROM prompts`)
				orgs, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
				if err != nil {
					return err
				}
				if len(orgs) != me.prompts {
					return fmt.Errorf("transaction %d for %s saw %d prompts, want %d", i, me.org, len(orgs), me.prompts)
				}
				for _, o := range orgs {
					if o != me.org {
						return fmt.Errorf("transaction %d for %s saw a prompt of %s", i, me.org, o)
					}
				}
				return nil
			})
		}()
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			if failed < 5 {
				t.Error(err)
			}
			failed++
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d transactions failed", failed, n)
	}
}

// InTenant rolls back when fn fails or ctx ends, and the next borrower of
// the connection sees no trace of the tenant.
func TestInTenantRollsBack(t *testing.T) {
	s := storetest.Open(t, store.Options{MaxConns: 1})
	owner := storetest.OwnerPool(t)
	a, b := seedTenant(t, owner), seedTenant(t, owner)
	ctx := context.Background()

	boom := errors.New("boom")
	err := s.InTenant(ctx, a.org, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO prompts (organization_id, request_id, model, status) VALUES ($1, 'rolled-back', 'm', 200)`, a.org); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	err = s.InTenant(cctx, a.org, func(tx pgx.Tx) error {
		if _, err := tx.Exec(cctx, `INSERT INTO prompts (organization_id, request_id, model, status) VALUES ($1, 'cancelled', 'm', 200)`, a.org); err != nil {
			return err
		}
		cancel()
		return nil
	})
	if err == nil {
		t.Error("commit after cancel succeeded")
	}
	if got := ownerCount(t, owner, "prompts", a.org); got != a.prompts {
		t.Errorf("A has %d prompts after two rolled-back inserts, want %d", got, a.prompts)
	}
	err = s.InTenant(ctx, b.org, func(tx pgx.Tx) error {
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM prompts WHERE organization_id = $1`, a.org).Scan(&n); err != nil {
			return err
		}
		if n != 0 {
			t.Errorf("B sees %d of A's prompts on the reused connection", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.InTenant(ctx, uuid.Nil, func(pgx.Tx) error { return nil }); !errors.Is(err, store.ErrNoTenant) {
		t.Errorf("InTenant(Nil) = %v, want ErrNoTenant", err)
	}
}

// Test 6: deleting an organization removes all its rows, keeps everyone
// else's, and the audit row of the deletion remains.
func TestDeleteOrgCascades(t *testing.T) {
	admin := storetest.Admin(t)
	owner := storetest.OwnerPool(t)
	a, b := seedTenant(t, owner), seedTenant(t, owner)
	ctx := context.Background()

	before := map[string]int{}
	for table := range tenantTables {
		before[table] = ownerCount(t, owner, table, b.org)
	}
	hashes, err := admin.DeleteOrg(ctx, a.org)
	if err != nil {
		t.Fatal(err)
	}
	if len(hashes) != 1 {
		t.Errorf("DeleteOrg returned %d key hashes, want the 1 seeded key's", len(hashes))
	}
	for table := range tenantTables {
		if table == "audit_log" {
			continue
		}
		if got := ownerCount(t, owner, table, a.org); got != 0 {
			t.Errorf("%s still has %d rows of the deleted organization", table, got)
		}
		if got := ownerCount(t, owner, table, b.org); got != before[table] {
			t.Errorf("%s: B has %d rows, had %d", table, got, before[table])
		}
	}
	var action string
	err = owner.QueryRow(ctx, `SELECT action FROM audit_log WHERE organization_id = $1 ORDER BY id DESC LIMIT 1`, a.org).Scan(&action)
	if err != nil || action != "org.delete" {
		t.Errorf("last audit row of the deleted org: %q, %v; want org.delete", action, err)
	}
	if _, err := owner.Exec(ctx, `DELETE FROM audit_log WHERE organization_id = $1`, a.org); err == nil {
		t.Error("the owner could delete audit rows; audit_log must be append-only")
	}
	if _, err := admin.DeleteOrg(ctx, a.org); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleting it again: %v, want ErrNotFound", err)
	}
}

// The request log's references are checked per statement by a trigger,
// not by foreign keys: the same rules must hold. A deletion waits for an
// insert in flight and then removes its rows; an insert after it, one
// naming another tenant's key, or one naming no organization is refused.
func TestPromptReferences(t *testing.T) {
	admin := storetest.Admin(t)
	owner := storetest.OwnerPool(t)
	s := storetest.Open(t, store.Options{})
	a, b := seedTenant(t, owner), seedTenant(t, owner)
	ctx := context.Background()
	insert := func(tx pgx.Tx, org, key uuid.UUID) error {
		_, err := tx.Exec(ctx, `INSERT INTO prompts (organization_id, request_id, api_key_id, model, status)
			VALUES ($1, 'ref-test', $2, 'gpt-4o-mini', 200)`, org, key)
		return err
	}

	t.Run("another tenant's key is refused like a random id", func(t *testing.T) { // THREATS 13
		err := s.InTenant(ctx, b.org, func(tx pgx.Tx) error { return insert(tx, b.org, a.keyID) })
		if !errors.Is(err, store.ErrConflict) || !isCode(err, "23503") {
			t.Errorf("B's row naming A's key: %v, want ErrConflict (foreign_key_violation)", err)
		}
		errRandom := s.InTenant(ctx, b.org, func(tx pgx.Tx) error { return insert(tx, b.org, uuid.New()) })
		var e1, e2 *pgconn.PgError
		if !errors.As(err, &e1) || !errors.As(errRandom, &e2) || e1.Code != e2.Code || e1.Message != e2.Message || e1.Detail != e2.Detail {
			t.Errorf("A's key: %v; a random id: %v; want the same error", err, errRandom)
		}
		if got := ownerCount(t, owner, "prompts", b.org); got != b.prompts {
			t.Errorf("B has %d prompts, want %d", got, b.prompts)
		}
	})

	// The trigger runs as the owner. The app role may create temporary
	// tables, and an unqualified name in a SECURITY DEFINER function finds
	// pg_temp first unless its search_path puts pg_temp last: decoys must
	// not satisfy the check.
	t.Run("temporary decoy tables do not fool the check", func(t *testing.T) {
		err := s.InTenant(ctx, b.org, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `CREATE TEMP TABLE api_keys (organization_id uuid, id uuid) ON COMMIT DROP;
				CREATE TEMP TABLE organizations (id uuid) ON COMMIT DROP`); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `GRANT ALL ON pg_temp.api_keys, pg_temp.organizations TO PUBLIC;
				INSERT INTO pg_temp.organizations VALUES ('`+b.org.String()+`');
				INSERT INTO pg_temp.api_keys VALUES ('`+b.org.String()+`', '`+a.keyID.String()+`')`); err != nil {
				return err
			}
			return insert(tx, b.org, a.keyID)
		})
		if !errors.Is(err, store.ErrConflict) || !isCode(err, "23503") {
			t.Errorf("B's row naming A's key, with a decoy api_keys in pg_temp: %v, want foreign_key_violation", err)
		}
	})

	// Its own tenant check, behind RLS: the owner bypasses RLS, so the
	// trigger alone refuses the owner's row for B inside A's context.
	t.Run("its tenant check holds where RLS does not apply", func(t *testing.T) {
		err := pgx.BeginFunc(ctx, owner, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT set_config('app.current_tenant_id', $1, true)`, a.org.String()); err != nil {
				return err
			}
			return insert(tx, b.org, uuid.Nil)
		})
		if !isCode(err, "42501") {
			t.Errorf("owner's row for B in A's context: %v, want insufficient_privilege", err)
		}
	})

	// Without a tenant setting (the owner's maintenance inserts), the
	// trigger's general path checks every row's organization and key.
	t.Run("without a tenant, every row is checked", func(t *testing.T) {
		ownerInsert := func(org, key uuid.UUID) error {
			return pgx.BeginFunc(ctx, owner, func(tx pgx.Tx) error { return insert(tx, org, key) })
		}
		if err := ownerInsert(b.org, a.keyID); !isCode(err, "23503") {
			t.Errorf("owner's row for B naming A's key: %v, want foreign_key_violation", err)
		}
		if err := ownerInsert(uuid.New(), uuid.Nil); !isCode(err, "23503") {
			t.Errorf("owner's row for a missing organization: %v, want foreign_key_violation", err)
		}
		if err := ownerInsert(b.org, b.keyID); err != nil {
			t.Errorf("owner's row for B naming B's key: %v", err)
		}
	})

	t.Run("deletion waits for an insert in flight", func(t *testing.T) {
		entered, release := make(chan struct{}), make(chan struct{})
		insErr := make(chan error, 1)
		go func() {
			insErr <- s.InTenant(ctx, a.org, func(tx pgx.Tx) error {
				if err := insert(tx, a.org, a.keyID); err != nil {
					return err
				}
				close(entered)
				<-release // hold the transaction open, its rows uncommitted
				return nil
			})
		}()
		<-entered
		delErr := make(chan error, 1)
		go func() { _, err := admin.DeleteOrg(ctx, a.org); delErr <- err }()
		select {
		case err := <-delErr:
			t.Fatalf("DeleteOrg returned (%v) while an insert of the organization was in flight", err)
		case <-time.After(300 * time.Millisecond):
		}
		close(release)
		if err := <-insErr; err != nil {
			t.Fatalf("the insert in flight: %v", err)
		}
		if err := <-delErr; err != nil {
			t.Fatal(err)
		}
		if got := ownerCount(t, owner, "prompts", a.org); got != 0 {
			t.Errorf("%d prompts of the deleted organization remain", got)
		}
	})

	t.Run("an insert for a deleted organization is refused", func(t *testing.T) {
		err := s.InTenant(ctx, a.org, func(tx pgx.Tx) error { return insert(tx, a.org, uuid.Nil) })
		if !errors.Is(err, store.ErrConflict) {
			t.Errorf("insert after deletion: %v, want ErrConflict (foreign_key_violation)", err)
		}
		if got := ownerCount(t, owner, "prompts", a.org); got != 0 {
			t.Errorf("%d prompts of the deleted organization", got)
		}
	})
}
