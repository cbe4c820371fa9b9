package control

import (
	"context"
	"testing"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/store"
)

// An operator creates an organization in a schema of its own; the
// placement is in the answer and in the organization read back, and the
// organization's delete drops the schema.
func TestCreateOrgPlacement(t *testing.T) {
	h := newHarness(t)
	tok, _ := h.operator(store.ScopeWrite, nil)
	var org map[string]any
	h.must(201, "POST", "/admin/v1/organizations", tok, map[string]any{"name": "placed", "placement": "schema"}).json(t, &org)
	if org["placement"] != "schema" {
		t.Fatalf("created %v, want placement schema", org)
	}
	id := uuid.MustParse(org["id"].(string))
	t.Cleanup(func() { h.admin.DeleteOrg(context.Background(), id) })
	var got map[string]any
	h.must(200, "GET", "/admin/v1/organizations/"+id.String(), tok, nil).json(t, &got)
	if got["placement"] != "schema" {
		t.Errorf("read back %v, want placement schema", got)
	}
	var def map[string]any
	h.must(201, "POST", "/admin/v1/organizations", tok, map[string]any{"name": "unplaced"}).json(t, &def)
	if def["placement"] != "shared" {
		t.Errorf("default placement %v, want shared", def["placement"])
	}
	h.admin.DeleteOrg(context.Background(), uuid.MustParse(def["id"].(string)))
}
