package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// A priced request's row keeps its cost and the prices it was computed
// with, and its end user; an unpriced one has neither (null, not 0). A
// later price change in the catalog rewrites nothing already stored.
func TestWriterRecordsCostAndEndUser(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	orgs := newOrgs(t, owner, 2)
	ctx := context.Background()
	admin := storetest.Admin(t)
	m, err := admin.AddModel(ctx, store.Model{OrgID: &orgs[0], Name: "priced-" + uuid.NewString()[:8], Upstream: "u",
		InputPrice: 150_000, CachedInputPrice: 75_000, OutputPrice: 600_000, Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	w := startWriter(t, st, store.WriterOptions{})
	priced := rec(orgs[0], "cost"+uuid.NewString()[:8], 1)
	priced.Model, priced.EndUser, priced.Priced = m.Name, "alice", true
	priced.Prices = store.Prices{Input: m.InputPrice, CachedInput: m.CachedInputPrice, Output: m.OutputPrice}
	priced.Cost = priced.Prices.Cost(priced.PromptTokens, priced.CacheReadTokens, priced.CompletionTokens)
	plain := rec(orgs[0], "cost"+uuid.NewString()[:8], 2)
	w.Record(priced)
	w.Record(plain)
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
	newPrice := store.MicroUSD(9_000_000)
	if _, err := admin.UpdateModel(ctx, store.ModelRef{Org: &orgs[0], Name: m.Name}, store.ModelChanges{InputPrice: &newPrice, OutputPrice: &newPrice}); err != nil {
		t.Fatal(err)
	}
	got, err := st.GetPrompt(ctx, orgs[0], priced.ID)
	if err != nil || got.EndUser == nil || *got.EndUser != "alice" || got.CostUSD == nil || *got.CostUSD != priced.Cost ||
		got.Prices == nil || got.Prices.Input != 150_000 || got.Prices.CachedInput != 75_000 || got.Prices.Output != 600_000 {
		t.Fatalf("read back %+v (cost %v, prices %+v), %v", got, got.CostUSD, got.Prices, err)
	}
	if got, err := st.GetPrompt(ctx, orgs[0], plain.ID); err != nil || got.EndUser != nil || got.CostUSD != nil || got.Prices != nil {
		t.Errorf("unpriced: %+v, %v", got, err)
	}
	since := priced.CreatedAt.Add(-time.Hour)
	rows, err := st.Usage(ctx, orgs[0], since, time.Now().Add(time.Minute), "user")
	if err != nil {
		t.Fatal(err)
	}
	var alice *store.UsageRow
	for i := range rows {
		if rows[i].Group == "alice" {
			alice = &rows[i]
		}
	}
	if alice == nil || alice.Requests != 1 || alice.CostUSD == nil || *alice.CostUSD != priced.Cost {
		t.Errorf("usage by user: %+v", rows)
	}
	// Tenant B sees neither A's end users nor its costs.
	if rows, err := st.Usage(ctx, orgs[1], since, time.Now().Add(time.Minute), "user"); err != nil || len(rows) != 0 {
		t.Errorf("tenant B's usage by user: %+v, %v", rows, err)
	}
	if _, err := st.GetPrompt(ctx, orgs[1], priced.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("another tenant read the row: %v", err)
	}
}
