package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// uniqueName is a model name no other test (or earlier run) uses: shared
// models are installation-wide.
func uniqueName(prefix string) string { return prefix + "-" + uuid.NewString()[:8] }

func entries(t *testing.T, s *store.Store, org uuid.UUID) map[string]store.CatalogEntry {
	t.Helper()
	es, err := s.CatalogFor(context.Background(), org)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]store.CatalogEntry{}
	for _, e := range es {
		if _, dup := m[e.Name]; dup && !e.Own {
			continue // the shadowed shared row; its own row decides
		}
		m[e.Name] = e
	}
	return m
}

// A tenant sees the shared models and its own, never another tenant's
// private models or access rules; the app role writes none of it.
func TestCatalogIsolation(t *testing.T) {
	admin := storetest.Admin(t)
	owner := storetest.OwnerPool(t)
	s := storetest.Open(t, store.Options{})
	a, b := seedTenant(t, owner), seedTenant(t, owner)
	ctx := context.Background()

	shared, private := uniqueName("shared"), uniqueName("private")
	if _, err := admin.AddModel(ctx, store.Model{Name: shared, Upstream: "default", InputPrice: 150_000, OutputPrice: 600_000, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AddModel(ctx, store.Model{OrgID: &a.org, Name: private, Upstream: "default", InputPrice: 1, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	if err := admin.SetModelAccess(ctx, a.org, shared, false); err != nil {
		t.Fatal(err)
	}

	ea, eb := entries(t, s, a.org), entries(t, s, b.org)
	if e, ok := ea[private]; !ok || !e.Own {
		t.Errorf("A does not see its private model: %+v", e)
	}
	if e, ok := ea[shared]; !ok || e.Own || e.Access == nil || *e.Access || e.InputPrice != 150_000 || e.OutputPrice != 600_000 {
		t.Errorf("A's view of the shared model: %+v, want it with A's revocation", e)
	}
	if _, ok := eb[private]; ok {
		t.Error("B sees A's private model")
	}
	if e, ok := eb[shared]; !ok || e.Access != nil {
		t.Errorf("B's view of the shared model: %+v, want it without an access rule (A's is not B's)", e)
	}

	t.Run("no tenant context sees nothing", func(t *testing.T) {
		conn, err := pgx.Connect(ctx, storetest.AppDSN())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		for _, table := range []string{"models", "model_access"} {
			var n int
			if err := conn.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&n); err != nil || n != 0 {
				t.Errorf("%s without context: %d rows, %v; want 0", table, n, err)
			}
		}
	})

	t.Run("the app role writes nothing", func(t *testing.T) {
		for _, sql := range []string{
			`INSERT INTO models (organization_id, name, upstream, input_price_micros, cached_input_price_micros, output_price_micros) VALUES ($1, 'x', 'default', 0, 0, 0)`,
			`UPDATE models SET input_price_micros = 0 WHERE organization_id = $1 OR organization_id IS NULL`,
			`DELETE FROM models WHERE organization_id = $1 OR organization_id IS NULL`,
			`DELETE FROM model_access WHERE organization_id = $1`,
		} {
			err := s.InTenant(ctx, a.org, func(tx pgx.Tx) error { _, err := tx.Exec(ctx, sql, a.org); return err })
			if !errors.Is(err, store.ErrForbidden) {
				t.Errorf("%s as app: %v, want permission denied", sql, err)
			}
		}
	})
}

// The operator's catalog actions: duplicate names, shadowing, updates,
// removal, and bad input refused with nothing written.
func TestCatalogAdmin(t *testing.T) {
	admin := storetest.Admin(t)
	owner := storetest.OwnerPool(t)
	s := storetest.Open(t, store.Options{})
	a := seedTenant(t, owner)
	ctx := context.Background()
	name := uniqueName("m")
	shared := store.Model{Name: name, Upstream: "default", InputPrice: 100, CachedInputPrice: 50, OutputPrice: 200, Enabled: true}

	if _, err := admin.AddModel(ctx, shared); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AddModel(ctx, shared); !errors.Is(err, store.ErrModelExists) {
		t.Errorf("adding the shared model twice: %v, want ErrModelExists", err)
	}
	// A tenant's own model of a shared name replaces it for that tenant.
	own := shared
	own.OrgID, own.InputPrice = &a.org, 7
	if _, err := admin.AddModel(ctx, own); err != nil {
		t.Fatalf("a tenant model shadowing a shared name: %v", err)
	}
	missing := uuid.New()
	own.OrgID = &missing
	if _, err := admin.AddModel(ctx, own); !errors.Is(err, store.ErrNoOrganization) {
		t.Errorf("a model for a missing organization: %v, want ErrNoOrganization", err)
	}
	for _, bad := range []store.MicroUSD{-1, store.MaxPrice + 1} {
		m := shared
		m.Name, m.OutputPrice = uniqueName("bad"), bad
		if _, err := admin.AddModel(ctx, m); err == nil {
			t.Errorf("price %d accepted", bad)
		}
		if _, err := admin.UpdateModel(ctx, store.ModelRef{Name: name}, store.ModelChanges{InputPrice: &bad}); err == nil {
			t.Errorf("update to price %d accepted", bad)
		}
	}

	price, off := store.MicroUSD(999), false
	m, err := admin.UpdateModel(ctx, store.ModelRef{Name: name}, store.ModelChanges{InputPrice: &price, Enabled: &off})
	if err != nil || m.InputPrice != 999 || m.Enabled || m.OutputPrice != 200 {
		t.Fatalf("update: %+v, %v", m, err)
	}
	if _, err := admin.UpdateModel(ctx, store.ModelRef{Name: uniqueName("none")}, store.ModelChanges{Enabled: &off}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("updating a missing model: %v, want ErrNotFound", err)
	}
	if err := admin.SetModelAccess(ctx, a.org, uniqueName("none"), true); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("granting a missing model: %v, want ErrNotFound", err)
	}
	if err := admin.SetModelAccess(ctx, a.org, name, true); err != nil {
		t.Fatal(err)
	}

	list, err := admin.Models(ctx, &a.org)
	if err != nil {
		t.Fatal(err)
	}
	var sawShared, sawOwn bool
	for _, m := range list {
		sawShared = sawShared || (m.Name == name && m.OrgID == nil)
		sawOwn = sawOwn || (m.Name == name && m.OrgID != nil && *m.OrgID == a.org)
	}
	if !sawShared || !sawOwn {
		t.Errorf("Models(A) lists shared=%v own=%v, want both", sawShared, sawOwn)
	}

	if _, err := admin.RemoveModel(ctx, store.ModelRef{Name: name}); err != nil {
		t.Fatal(err)
	}
	if e := entries(t, s, a.org)[name]; !e.Own || e.InputPrice != 7 {
		t.Errorf("after the shared model's removal A sees %+v, want its own", e)
	}
	var n int
	if err := owner.QueryRow(ctx, `SELECT count(*) FROM model_access WHERE organization_id = $1`, a.org).Scan(&n); err != nil || n != 0 {
		t.Errorf("access rules of the removed model: %d, %v; want 0", n, err)
	}
	var actions []string
	rows, _ := owner.Query(ctx, `SELECT action FROM audit_log WHERE action LIKE 'model.%' AND (organization_id = $1 OR organization_id IS NULL)
		AND (details->>'name' = $2 OR details->>'model' = $2) ORDER BY id`, a.org, name)
	actions, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"model.add", "model.add", "model.update", "model.grant", "model.remove"}
	if len(actions) != len(want) {
		t.Errorf("audit rows %v, want %v", actions, want)
	}
}
