package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// CatalogsFor and BudgetsForOrgs read many organizations in one
// transaction, each under its own setting: every organization gets its
// own private models, access rules and budgets and never another's,
// whatever its place in the batch (mutant 125 runs the batch under the
// first organization's setting).
func TestOrgBatchIsolation(t *testing.T) {
	admin := storetest.Admin(t)
	owner := storetest.OwnerPool(t)
	st := storetest.Open(t, store.Options{MaxConns: 1})
	ctx := context.Background()
	orgs := newOrgs(t, owner, 3) // the third has nothing of its own
	shared := uniqueName("batch-shared")
	if _, err := admin.AddModel(ctx, store.Model{Name: shared, Upstream: "default", InputPrice: 7, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { owner.Exec(context.Background(), `DELETE FROM models WHERE name = $1`, shared) }) //nolint:errcheck // best effort
	private := map[uuid.UUID]string{}
	budgets := map[uuid.UUID]store.MicroUSD{}
	for i, org := range orgs[:2] {
		private[org] = uniqueName("batch-private")
		if _, err := admin.AddModel(ctx, store.Model{OrgID: &org, Name: private[org], Upstream: "default", Enabled: true}); err != nil {
			t.Fatal(err)
		}
		if err := admin.SetModelAccess(ctx, org, shared, i == 0); err != nil {
			t.Fatal(err)
		}
		budgets[org] = store.MicroUSD(1_000_000 * (i + 1))
		if _, err := admin.SetBudget(ctx, store.Budget{OrgID: org, Limit: budgets[org], Window: store.BudgetWindow{Kind: "day"}}); err != nil {
			t.Fatal(err)
		}
	}

	// Each order puts each organization first once: a batch read under
	// one organization's setting shows in the others' entries.
	for _, order := range [][]uuid.UUID{orgs, {orgs[1], orgs[2], orgs[0]}, {orgs[2], orgs[0], orgs[1]}} {
		cats, err := st.CatalogsFor(ctx, order)
		if err != nil {
			t.Fatalf("CatalogsFor: %v", err)
		}
		bs, err := st.BudgetsForOrgs(ctx, order)
		if err != nil {
			t.Fatalf("BudgetsForOrgs: %v", err)
		}
		for i, org := range orgs {
			es, ok := cats[org]
			if !ok {
				t.Fatalf("organization %d missing from the catalogs", i)
			}
			var sawShared bool
			own := map[string]bool{}
			for _, e := range es {
				switch {
				case e.Name == shared:
					sawShared = true
					want := i < 2 // a rule for the first two (grant, revocation), none for the third
					if (e.Access != nil) != want || want && *e.Access != (i == 0) || e.Own {
						t.Errorf("organization %d sees the shared model as %+v", i, e)
					}
				case e.Own:
					own[e.Name] = true
				}
			}
			if !sawShared {
				t.Errorf("organization %d does not see the shared model", i)
			}
			for other, name := range private {
				if own[name] != (other == org) {
					t.Errorf("organization %d: private model of %s seen %v", i, other, own[name])
				}
			}
			list, ok := bs[org]
			switch {
			case !ok:
				t.Fatalf("organization %d missing from the budgets", i)
			case i == 2 && len(list) != 0:
				t.Errorf("organization without budgets reads %+v", list)
			case i < 2 && (len(list) != 1 || list[0].OrgID != org || list[0].Limit != budgets[org]):
				t.Errorf("organization %d reads budgets %+v", i, list)
			}
		}
	}
	if _, err := st.CatalogsFor(ctx, []uuid.UUID{orgs[0], uuid.Nil}); !errors.Is(err, store.ErrNoTenant) {
		t.Errorf("CatalogsFor without an organization: %v, want ErrNoTenant", err)
	}
	if _, err := st.BudgetsForOrgs(ctx, []uuid.UUID{uuid.Nil}); !errors.Is(err, store.ErrNoTenant) {
		t.Errorf("BudgetsForOrgs without an organization: %v, want ErrNoTenant", err)
	}
	conn := acquireOnly(t, st)
	if conn.PgConn().TxStatus() != 'I' {
		t.Errorf("connection left in transaction status %q", conn.PgConn().TxStatus())
	}
	var setting string
	if err := conn.QueryRow(ctx, `SELECT coalesce(current_setting('app.current_tenant_id', true), '')`).Scan(&setting); err != nil || setting != "" {
		t.Errorf("tenant setting after the batches: %q, %v", setting, err)
	}
}

// BenchmarkOrgReads: the first reads of 32 organizations (catalog and
// budget list), as two batches (CatalogsFor, BudgetsForOrgs) and as 64
// single reads (CatalogFor, BudgetsFor); per organization.
func BenchmarkOrgReads(b *testing.B) {
	st := storetest.Open(b, store.Options{})
	owner := storetest.OwnerPool(b)
	orgs := newOrgs(b, owner, 32)
	ctx := context.Background()
	b.Run("batch", func(b *testing.B) {
		for b.Loop() {
			if _, err := st.CatalogsFor(ctx, orgs); err != nil {
				b.Fatal(err)
			}
			if _, err := st.BudgetsForOrgs(ctx, orgs); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*len(orgs)), "µs/org")
	})
	b.Run("single", func(b *testing.B) {
		for b.Loop() {
			for _, org := range orgs {
				if _, err := st.CatalogFor(ctx, org); err != nil {
					b.Fatal(err)
				}
				if _, err := st.BudgetsFor(ctx, org); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*len(orgs)), "µs/org")
	})
}
