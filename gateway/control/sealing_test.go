package control

import (
	"testing"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/seal"
)

// An organization created over HTTP is sealed by default exactly when the
// control plane holds a key-encryption key, as with `org create`; asking
// for sealing without one is a 400 naming the field, and creates nothing.
func TestCreateOrgSealing(t *testing.T) {
	h := newHarness(t)
	tok, _ := h.operator(store.ScopeWrite, nil)
	var org struct {
		ID     string `json:"id"`
		Sealed bool   `json:"sealed"`
	}
	h.must(201, "POST", "/admin/v1/organizations", tok, map[string]any{"name": "clear"}).json(t, &org)
	if org.Sealed {
		t.Errorf("without a KEK: %+v, want unsealed", org)
	}
	r := h.must(400, "POST", "/admin/v1/organizations", tok, map[string]any{"name": "want-sealed", "sealed": true})
	if _, param, _ := r.errorParts(t); param != "sealed" {
		t.Errorf("sealed without a KEK: %s", r.body)
	}

	kek, err := seal.NewLocalKEK()
	if err != nil {
		t.Fatal(err)
	}
	h.admin.UseKEK(kek)
	h.must(201, "POST", "/admin/v1/organizations", tok, map[string]any{"name": "sealed"}).json(t, &org)
	if !org.Sealed {
		t.Errorf("with a KEK: %+v, want sealed by default", org)
	}
	h.must(201, "POST", "/admin/v1/organizations", tok, map[string]any{"name": "opted-out", "sealed": false}).json(t, &org)
	if org.Sealed {
		t.Errorf("with a KEK, sealed false: %+v, want unsealed", org)
	}
}
