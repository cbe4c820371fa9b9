package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// placeTables are the data-plane tables of every place, as the data set's
// baseline makes them (prompts' day partitions and default partition carry
// prompts' policy).
var placeTables = map[string]bool{"prompts": true, "usage_hourly": true, "usage_hourly_user": true, "usage_daily": true, "usage_daily_user": true, "usage_monthly_user": true}

// placeAppPrivileges is everything the app role may do inside one place's
// schema: the grants of the data set's baseline and EXECUTE on the two
// functions PUBLIC keeps (prompts_row_id, the default of prompts.id).
// The version table, the partitions and the trigger functions: nothing.
var placeAppPrivileges = []string{
	"function prompts_create_partitions(integer): EXECUTE",
	"function prompts_row_id(timestamp with time zone, uuid): EXECUTE",
	"function usage_roll_days(): EXECUTE",
	"schema: USAGE",
	"table prompts: INSERT, SELECT",
	"table usage_daily: SELECT",
	"table usage_daily_user: SELECT",
	"table usage_hourly: SELECT",
	"table usage_hourly_user: SELECT",
	"table usage_monthly_user: SELECT",
	"table usage_rollup_state: SELECT",
}

// placePrivilegesSQL is appPrivilegesSQL confined to one schema ($1).
const placePrivilegesSQL = `
WITH me AS (SELECT oid FROM pg_roles WHERE pg_has_role(current_user, oid, 'MEMBER')),
ns AS (SELECT oid FROM pg_namespace WHERE nspname = $1),
acls AS (
	SELECT 'schema' AS obj, coalesce(nspacl, acldefault('n'::"char", nspowner)) AS acl FROM pg_namespace WHERE oid IN (SELECT oid FROM ns)
	UNION ALL
	SELECT CASE WHEN c.relkind = 'S' THEN 'sequence ' ELSE 'table ' END || c.relname,
	       coalesce(c.relacl, acldefault((CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END)::"char", c.relowner))
	FROM pg_class c WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND c.relnamespace IN (SELECT oid FROM ns)
	UNION ALL
	SELECT 'column ' || c.relname || '.' || a.attname, a.attacl
	FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
	WHERE a.attacl IS NOT NULL AND NOT a.attisdropped AND c.relnamespace IN (SELECT oid FROM ns)
	UNION ALL
	SELECT 'function ' || p.proname || '(' || oidvectortypes(p.proargtypes) || ')', coalesce(p.proacl, acldefault('f'::"char", p.proowner))
	FROM pg_proc p WHERE p.pronamespace IN (SELECT oid FROM ns))
SELECT obj || ': ' || string_agg(DISTINCT x.privilege_type, ', ' ORDER BY x.privilege_type)
FROM acls, LATERAL aclexplode(acls.acl) x
WHERE x.grantee = 0 OR x.grantee IN (SELECT oid FROM me)
GROUP BY obj ORDER BY 1`

// placeUnderTest is one place and how to reach it as the app role.
type placeUnderTest struct {
	name, appDSN, schema string
	org                  uuid.UUID // the pinned organization of a tenant schema
}

// TestPlaceCatalog is TestCatalog for every place other than the shared
// one: each tenant schema of the main database (a fresh one included, so
// that the current data set is what is checked) and each database target.
// In each: forced RLS on every tenant table and partition, exactly the one
// isolating policy (pinned to the schema's organization in a tenant
// schema), exactly the app role's allowlisted privileges, nothing owned by
// the app role, SECURITY DEFINER functions with a pinned search_path, the
// triggers in place.
func TestPlaceCatalog(t *testing.T) {
	ts := storetest.Targets(t)
	a := storetest.PlacedAdmin(t)
	owner := storetest.OwnerPool(t)
	ctx := context.Background()
	fresh, _, err := a.CreateOrgPlaced(ctx, store.NewOrg{Name: "catalog", Capture: store.CaptureFull, Placement: store.Placement{Kind: store.PlaceSchema}}, store.Idempotency{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.DeleteOrg(context.Background(), fresh.ID) })

	var places []placeUnderTest
	rows, _ := owner.Query(ctx, `SELECT o.id FROM organizations o WHERE o.placement = 'schema'`)
	orgs, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		t.Fatal(err)
	}
	for _, org := range orgs {
		places = append(places, placeUnderTest{name: "schema " + store.SchemaName(org), appDSN: storetest.AppDSN(), schema: store.SchemaName(org), org: org})
	}
	for _, tg := range ts {
		places = append(places, placeUnderTest{name: "database:" + tg.Name, appDSN: tg.DSN, schema: "public"})
	}
	for _, p := range places {
		t.Run(p.name, func(t *testing.T) {
			if p.org == uuid.Nil {
				checkPlaceCatalog(t, p)
				return
			}
			// Other packages' tests create and delete schema tenants in
			// the same database meanwhile: hold the organization (org
			// delete locks it FOR UPDATE before dropping the schema).
			tx, err := owner.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			var id uuid.UUID
			if err := tx.QueryRow(ctx, `SELECT id FROM organizations WHERE id = $1 FOR KEY SHARE`, p.org).Scan(&id); err != nil {
				// Another test deleted this organization between the listing
				// and now: its schema is gone, there is nothing to check.
				t.Logf("organization deleted meanwhile (%v): its schema is not checked", err)
				return
			}
			checkPlaceCatalog(t, p)
		})
	}
}

func checkPlaceCatalog(t *testing.T, p placeUnderTest) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, p.appDSN)
	if err != nil {
		storetest.Unavailable(t, "PostgreSQL (app role) of "+p.name, err)
	}
	defer conn.Close(ctx)

	// Tables with a tenant column, partitions included.
	type tbl struct {
		Name, Parent    string
		Enabled, Forced bool
	}
	rows, _ := conn.Query(ctx, `
		SELECT c.relname::text, coalesce((SELECT pc.relname::text FROM pg_inherits i JOIN pg_class pc ON pc.oid = i.inhparent WHERE i.inhrelid = c.oid), ''),
		       c.relrowsecurity, c.relforcerowsecurity
		FROM pg_class c
		WHERE c.relkind IN ('r', 'p') AND c.relnamespace = $1::text::regnamespace
		  AND EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'organization_id' AND NOT a.attisdropped)
		ORDER BY 1`, p.schema)
	tables, err := pgx.CollectRows(rows, pgx.RowToStructByPos[tbl])
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, tb := range tables {
		top := tb.Name
		if tb.Parent != "" {
			top = tb.Parent
		}
		seen[top] = true
		if !placeTables[top] {
			if p.schema == "public" {
				continue // a target's public schema is only ours in its data tables
			}
			t.Errorf("%s has a tenant column but is not a data-plane table this test knows", tb.Name)
		}
		if !tb.Enabled || !tb.Forced {
			t.Errorf("%s: rls enabled=%v forced=%v, want both", tb.Name, tb.Enabled, tb.Forced)
		}
	}
	for name := range placeTables {
		if !seen[name] {
			t.Errorf("data-plane table %s missing", name)
		}
	}

	// Exactly one policy per table, the isolating one, written here and
	// not taken from the code under test.
	want := `organization_id = (SELECT NULLIF(current_setting('app.current_tenant_id', true), '')::uuid)`
	if p.org != uuid.Nil {
		want += ` AND organization_id = '` + p.org.String() + `'::uuid`
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `CREATE TEMP TABLE policy_reference (organization_id uuid) ON COMMIT DROP`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE POLICY ref ON pg_temp.policy_reference USING (`+want+`)`); err != nil {
			return err
		}
		var deparsed string
		if err := tx.QueryRow(ctx, `SELECT qual FROM pg_policies WHERE tablename = 'policy_reference'`).Scan(&deparsed); err != nil {
			return err
		}
		type policy struct {
			Table, Name, Permissive, Cmd, Roles string
			Qual, WithCheck                     *string
		}
		rows, _ := tx.Query(ctx, `SELECT tablename::text, policyname::text, permissive, cmd, array_to_string(roles, ','), qual, with_check
			FROM pg_policies WHERE schemaname = $1 ORDER BY 1, 2`, p.schema)
		all, err := pgx.CollectRows(rows, pgx.RowToStructByPos[policy])
		if err != nil {
			return err
		}
		got := map[string][]policy{}
		for _, pol := range all {
			got[pol.Table] = append(got[pol.Table], pol)
		}
		for _, tb := range tables {
			top := tb.Name
			if tb.Parent != "" {
				top = tb.Parent
			}
			if !placeTables[top] {
				continue
			}
			ps := got[tb.Name]
			if len(ps) != 1 {
				t.Errorf("%s has %d policies, want exactly 1", tb.Name, len(ps))
			}
			for _, pol := range ps {
				if pol.Permissive != "PERMISSIVE" || pol.Cmd != "ALL" || pol.Roles != "public" {
					t.Errorf("%s policy %s: %s FOR %s TO %s, want PERMISSIVE FOR ALL TO public", tb.Name, pol.Name, pol.Permissive, pol.Cmd, pol.Roles)
				}
				if deref(pol.Qual) != deparsed || deref(pol.WithCheck) != deparsed {
					t.Errorf("%s policy %s: USING %s WITH CHECK %s, want both %s", tb.Name, pol.Name, deref(pol.Qual), deref(pol.WithCheck), deparsed)
				}
			}
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatal(err)
	}

	// The app role's privileges in the schema: exactly the allowlist.
	rows, _ = conn.Query(ctx, placePrivilegesSQL, p.schema)
	privs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{}
	for _, s := range placeAppPrivileges {
		allowed[s] = true
	}
	have := map[string]bool{}
	for _, s := range privs {
		have[s] = true
		if !allowed[s] {
			t.Errorf("app role has %q in %s, which is not in the allowlist", s, p.name)
		}
	}
	for _, s := range placeAppPrivileges {
		if !have[s] {
			t.Errorf("app role lacks %q in %s", s, p.name)
		}
	}

	// Owners: nothing of the schema is the app role's.
	var owned []string
	rows, _ = conn.Query(ctx, `SELECT c.relname::text FROM pg_class c WHERE c.relnamespace = $1::text::regnamespace AND pg_has_role(current_user, c.relowner, 'MEMBER')
		UNION ALL SELECT p.proname::text FROM pg_proc p WHERE p.pronamespace = $1::text::regnamespace AND pg_has_role(current_user, p.proowner, 'MEMBER')
		UNION ALL SELECT n.nspname::text FROM pg_namespace n WHERE n.nspname = $1::text AND pg_has_role(current_user, n.nspowner, 'MEMBER')`, p.schema)
	if owned, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if len(owned) > 0 {
		t.Errorf("app role owns %v in %s", owned, p.name)
	}

	// SECURITY DEFINER functions: pinned search_path, not PUBLIC's.
	rows, _ = conn.Query(ctx, `SELECT p.proname::text FROM pg_proc p WHERE p.prosecdef AND p.pronamespace = $1::text::regnamespace
		AND (NOT coalesce(EXISTS (SELECT FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%pg_temp'), false)
		     OR has_function_privilege('public', p.oid, 'EXECUTE'))`, p.schema)
	bad, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) > 0 {
		t.Errorf("SECURITY DEFINER functions without a pinned search_path or open to PUBLIC in %s: %v", p.name, bad)
	}

	// The triggers: the tenant check and the rollups.
	for _, tg := range []string{"prompts_check_references", "prompts_rollup"} {
		var enabled string
		err := conn.QueryRow(ctx, `SELECT tgenabled FROM pg_trigger WHERE tgrelid = ($1 || '.prompts')::regclass AND tgname = $2`, p.schema, tg).Scan(&enabled)
		if err != nil || enabled != "O" {
			t.Errorf("%s on %s.prompts: enabled=%q, %v; want O", tg, p.schema, enabled, err)
		}
	}
}

// The app role in tenant B's context naming tenant C's schema (or the
// shared tables, or a target) reads nothing and writes nothing: each
// schema's policies pin its organization as well as the tenant setting,
// and its trigger refuses rows of another organization.
func TestPlacementCrossSchema(t *testing.T) {
	storetest.Targets(t)
	a := storetest.PlacedAdmin(t)
	owner := storetest.OwnerPool(t)
	ctx := context.Background()
	mk := func(name string) store.Organization {
		return placedTenant(t, a, name, store.Placement{Kind: store.PlaceSchema})
	}
	b, c := mk("cross b"), mk("cross c")
	seedPlacePrompts(t, owner, store.SchemaName(c.ID), c.ID, 3)
	seedPlacePrompts(t, owner, store.SchemaName(b.ID), b.ID, 1)

	s := storetest.Open(t, store.Options{})
	cs := store.SchemaName(c.ID)
	for _, q := range []string{
		`SELECT count(*) FROM ` + cs + `.prompts`,
		`SELECT count(*) FROM ` + cs + `.usage_hourly`,
	} {
		var n int
		err := s.InTenant(ctx, b.ID, func(tx pgx.Tx) error { return tx.QueryRow(ctx, q).Scan(&n) })
		if err != nil || n != 0 {
			t.Errorf("as B: %s = %d, %v; want 0", q, n, err)
		}
	}
	// Writes into C's schema in B's context: refused, whichever
	// organization the row names.
	for _, org := range []uuid.UUID{b.ID, c.ID} {
		err := s.InTenant(ctx, b.ID, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO `+cs+`.prompts (organization_id, request_id, model, status) VALUES ($1, $2, 'm', 200)`, org, uuid.NewString())
			return err
		})
		if !errors.Is(err, store.ErrForbidden) {
			t.Errorf("as B, insert into C's schema naming %s: err = %v, want forbidden", org, err)
		}
	}
	// C's schema's policy pins C even for a context of C's id misspelt
	// into B's rows: the owner (BYPASSRLS) inserting B's row there is
	// refused by the trigger.
	err := pgx.BeginFunc(ctx, owner, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO `+cs+`.prompts (organization_id, request_id, model, status) VALUES ($1, 'x', 'm', 200)`, b.ID)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "other than the current tenant") {
		t.Errorf("owner inserting B's row into C's schema: err = %v, want the trigger's refusal", err)
	}
	var n int
	owner.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s.prompts`, cs)).Scan(&n)
	if n != 3 {
		t.Errorf("C's schema holds %d rows, want its 3", n)
	}
}
