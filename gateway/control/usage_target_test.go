package control

import (
	"context"
	"testing"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// TestUsageByOrgUnknownTarget: an organization placed on a database
// target that this control plane's configuration does not name makes the
// cross-tenant report a 503 that says so, not a 500 (and not a total that
// leaves the organization out).
func TestUsageByOrgUnknownTarget(t *testing.T) {
	placed := storetest.PlacedAdmin(t)
	org, _, err := placed.CreateOrgPlaced(context.Background(), store.NewOrg{Name: "elsewhere", Capture: store.CaptureFull,
		Placement: store.Placement{Kind: store.PlaceDatabase, Target: "t1"}}, store.Idempotency{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { placed.DeleteOrg(context.Background(), org.ID) }) //nolint:errcheck // test teardown
	h := newHarness(t, func(o *Options) { o.Admin = storetest.Admin(t) })
	tok, _ := h.operator(store.ScopeRead, nil)
	r := h.must(503, "GET", "/admin/v1/usage", tok, nil)
	if code, _, msg := r.errorParts(t); code != "target_unavailable" || msg == "" {
		t.Errorf("code %q, message %q", code, msg)
	}
}
