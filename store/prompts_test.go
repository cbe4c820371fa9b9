package store_test

import (
	"context"
	"testing"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// The organization filter in SQL is a second wall: with it removed, RLS
// alone still returns only the tenant's own rows.
func TestListPromptsRLSSafetyNet(t *testing.T) {
	s := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	a, b := seedTenant(t, owner), seedTenant(t, owner)
	ctx := context.Background()
	for _, tenant := range []seeded{a, b} {
		rows, err := store.ListPromptsWithoutOrgFilterForTest(ctx, s, tenant.org, store.PromptFilter{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != tenant.prompts {
			t.Errorf("unfiltered list as %s: %d rows, want %d", tenant.org, len(rows), tenant.prompts)
		}
		for _, r := range rows {
			other := a
			if tenant.org == a.org {
				other = b
			}
			if r.APIKeyID != nil && *r.APIKeyID == other.keyID {
				t.Errorf("tenant %s saw a row of %s", tenant.org, other.org)
			}
		}
	}
}
