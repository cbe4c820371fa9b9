package store_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

func TestParsePlacement(t *testing.T) {
	for in, want := range map[string]string{"": "shared", "shared": "shared", "schema": "schema", "database:eu_1": "database:eu_1"} {
		p, err := store.ParsePlacement(in)
		if err != nil || p.String() != want {
			t.Errorf("ParsePlacement(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
	for _, in := range []string{"database:", "database:EU", "database:a-b", "database:1a", "Schema", "db:x", "database:" + strings.Repeat("a", 41)} {
		if _, err := store.ParsePlacement(in); err == nil {
			t.Errorf("ParsePlacement(%q) succeeded, want an error", in)
		}
	}
	id := uuid.MustParse("0123abcd-0000-4000-8000-00000000beef")
	if got := store.SchemaName(id); got != "t_0123abcd00004000800000000000beef" {
		t.Errorf("SchemaName = %s", got)
	}
}

// schemaOwner reads who owns schema name and its comment ("" if none).
func schemaInfo(t *testing.T, owner *pgxpool.Pool, name string) (exists bool, comment string) {
	t.Helper()
	err := owner.QueryRow(context.Background(), `SELECT coalesce(obj_description(oid, 'pg_namespace'), '') FROM pg_namespace WHERE nspname = $1`, name).Scan(&comment)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return true, comment
}

func TestCreateOrgPlacement(t *testing.T) {
	a := storetest.PlacedAdmin(t)
	owner := storetest.OwnerPool(t)
	ctx := context.Background()

	t.Run("schema", func(t *testing.T) {
		org, _, err := a.CreateOrgPlaced(ctx, store.NewOrg{Name: "placed schema", Capture: store.CaptureFull, Placement: store.Placement{Kind: store.PlaceSchema}}, store.Idempotency{})
		if err != nil {
			t.Fatal(err)
		}
		if org.Placement != "schema" {
			t.Errorf("placement %q, want schema", org.Placement)
		}
		if got, err := a.Org(ctx, org.ID); err != nil || got.Placement != "schema" {
			t.Errorf("Org: %+v, %v; want placement schema", got, err)
		}
		exists, comment := schemaInfo(t, owner, store.SchemaName(org.ID))
		if !exists || comment != "bulkhead tenant "+org.ID.String() {
			t.Fatalf("schema %s: exists %v comment %q", store.SchemaName(org.ID), exists, comment)
		}
		var v int64
		if err := owner.QueryRow(ctx, `SELECT max(version_id) FROM `+store.SchemaName(org.ID)+`.bulkhead_data_version`).Scan(&v); err != nil || v != store.LatestDataVersion() {
			t.Errorf("data version of the new schema: %d, %v; want %d (created migrated)", v, err, store.LatestDataVersion())
		}
		if _, err := a.DeleteOrg(ctx, org.ID); err != nil {
			t.Fatal(err)
		}
		if exists, _ := schemaInfo(t, owner, store.SchemaName(org.ID)); exists {
			t.Errorf("schema %s survived org delete", store.SchemaName(org.ID))
		}
		var audits int
		owner.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE organization_id = $1 AND action = 'org.delete'`, org.ID).Scan(&audits)
		if audits != 1 {
			t.Errorf("org.delete audit rows: %d, want 1", audits)
		}
	})

	t.Run("database target", func(t *testing.T) {
		org, _, err := a.CreateOrgPlaced(ctx, store.NewOrg{Name: "placed db", Capture: store.CaptureFull, Placement: store.Placement{Kind: store.PlaceDatabase, Target: "t1"}}, store.Idempotency{})
		if err != nil {
			t.Fatal(err)
		}
		if org.Placement != "database:t1" {
			t.Errorf("placement %q, want database:t1", org.Placement)
		}
		t1 := targetOwner(t, "t1")
		seedTargetPrompts(t, t1, org.ID, 3)
		if _, err := a.DeleteOrg(ctx, org.ID); err != nil {
			t.Fatal(err)
		}
		var n int
		t1.QueryRow(ctx, `SELECT count(*) FROM public.prompts WHERE organization_id = $1`, org.ID).Scan(&n)
		if n != 0 {
			t.Errorf("%d rows left on the target after org delete", n)
		}
	})

	t.Run("unknown target: an error naming it, nothing created", func(t *testing.T) {
		name := "placed nowhere " + uuid.NewString()
		_, _, err := a.CreateOrgPlaced(ctx, store.NewOrg{Name: name, Capture: store.CaptureFull, Placement: store.Placement{Kind: store.PlaceDatabase, Target: "nope"}}, store.Idempotency{})
		if !errors.Is(err, store.ErrUnknownTarget) || !strings.Contains(err.Error(), `"nope"`) {
			t.Errorf("err = %v, want ErrUnknownTarget naming nope", err)
		}
		var n int
		owner.QueryRow(ctx, `SELECT count(*) FROM organizations WHERE name = $1`, name).Scan(&n)
		if n != 0 {
			t.Errorf("%d organizations created", n)
		}
	})

	t.Run("a schema that exists but is not ours is refused", func(t *testing.T) {
		id := uuid.New()
		if _, err := owner.Exec(ctx, `CREATE SCHEMA `+store.SchemaName(id)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { owner.Exec(ctx, `DROP SCHEMA IF EXISTS `+store.SchemaName(id)+` CASCADE`) })
		err := store.EnsureSchemaForTest(ctx, a, id)
		if err == nil || !strings.Contains(err.Error(), "is not Bulkhead's") {
			t.Errorf("err = %v, want a refusal", err)
		}
	})

	t.Run("a failed creation leaves no schema", func(t *testing.T) {
		// An over-long name fails the organizations row after the schema
		// was made: the schema must go.
		before := countTenantSchemas(t, owner)
		_, _, err := a.CreateOrgPlaced(ctx, store.NewOrg{Name: strings.Repeat("x", 300), Capture: store.CaptureFull, Placement: store.Placement{Kind: store.PlaceSchema}}, store.Idempotency{})
		if err == nil {
			t.Fatal("an organization with a 300-character name was created")
		}
		if after := countTenantSchemas(t, owner); after != before {
			t.Errorf("tenant schemas %d -> %d: the failed creation left one", before, after)
		}
	})
}

func countTenantSchemas(t *testing.T, owner *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := owner.QueryRow(context.Background(), `SELECT count(*) FROM pg_namespace WHERE nspname ~ '^t_[0-9a-f]{32}$'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// targetOwner is an owner pool on the named test target.
func targetOwner(t *testing.T, name string) *pgxpool.Pool {
	t.Helper()
	for _, tg := range storetest.TargetConfigs() {
		if tg.Name == name {
			p, err := pgxpool.New(context.Background(), tg.AdminDSN)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.Close)
			return p
		}
	}
	t.Fatalf("no test target %s", name)
	return nil
}

// seedTargetPrompts inserts n prompts of org into a place's prompts table
// (schema-qualified), as the owner inside org's context.
func seedTargetPrompts(t *testing.T, pool *pgxpool.Pool, org uuid.UUID, n int) {
	seedPlacePrompts(t, pool, "public", org, n)
}

func seedPlacePrompts(t *testing.T, pool *pgxpool.Pool, schema string, org uuid.UUID, n int) {
	t.Helper()
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('app.current_tenant_id', $1, true)`, org.String()); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO `+schema+`.prompts (organization_id, request_id, model, prompt_text, response, status)
			SELECT $1, 'req-' || g, 'gpt-4o-mini', 'secret prompt', 'answer', 200 FROM generate_series(1, $2::int) g`, org, n)
		return err
	})
	if err != nil {
		t.Fatalf("seeding %s.prompts: %v", schema, err)
	}
}

// Several `bulkhead migrate` at once: every place ends at the latest
// version, none fails.
func TestMigratePlacesConcurrently(t *testing.T) {
	ts := storetest.Targets(t)
	a := storetest.PlacedAdmin(t)
	ctx := context.Background()
	org, _, err := a.CreateOrgPlaced(ctx, store.NewOrg{Name: "migrate race", Capture: store.CaptureFull, Placement: store.Placement{Kind: store.PlaceSchema}}, store.Idempotency{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.DeleteOrg(context.Background(), org.ID) })
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { _, errs[i] = store.MigratePlaces(ctx, storetest.OwnerDSN(), ts) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("run %d: %v", i, err)
		}
	}
	st, err := store.PlacesStatus(ctx, storetest.OwnerDSN(), ts)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, p := range st {
		seen[p.Place] = true
		if p.Version != p.Latest || p.Error != "" {
			t.Errorf("%s at %d of %d (%s)", p.Place, p.Version, p.Latest, p.Error)
		}
	}
	for _, want := range []string{"shared", "schema " + store.SchemaName(org.ID), "database:t1", "database:t2"} {
		if !seen[want] {
			t.Errorf("status lacks %s: %v", want, st)
		}
	}
}

// A target that cannot be reached, or whose roles are wrong, is named in
// the error; the other places are migrated all the same.
func TestMigratePlacesNamesTheFailingPlace(t *testing.T) {
	ts := storetest.Targets(t)
	ctx := context.Background()
	down := store.Target{Name: "down", DSN: "postgres://bulkhead_app:x@127.0.0.1:1/x?sslmode=disable&connect_timeout=2",
		AdminDSN: "postgres://bulkhead_owner:x@127.0.0.1:1/x?sslmode=disable&connect_timeout=2"}
	asOwner := store.Target{Name: "owner_as_app", DSN: ts[0].AdminDSN, AdminDSN: ts[0].AdminDSN}
	st, err := store.MigratePlaces(ctx, storetest.OwnerDSN(), append([]store.Target{down, asOwner}, ts...))
	if err == nil {
		t.Fatal("no error for an unreachable target and an owner used as runtime role")
	}
	if !strings.Contains(err.Error(), "database target down is unreachable") {
		t.Errorf("err = %v, want it to name the unreachable target", err)
	}
	if !strings.Contains(err.Error(), "database target owner_as_app: the runtime role bulkhead_owner") ||
		!strings.Contains(err.Error(), "owner role") {
		t.Errorf("err = %v, want it to refuse the owner as runtime role", err)
	}
	for _, p := range st {
		if p.Place == "database:down" || p.Place == "database:owner_as_app" {
			if p.Error == "" {
				t.Errorf("%s: no error in its status", p.Place)
			}
			continue
		}
		if p.Version != p.Latest {
			t.Errorf("%s at %d of %d: the failure elsewhere held it back", p.Place, p.Version, p.Latest)
		}
	}
}
