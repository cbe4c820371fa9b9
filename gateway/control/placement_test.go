package control

import (
	"context"
	"strings"
	"testing"
	"time"

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

// Deleting an organization while it is moved is a 409 in the API's error
// shape, and deletes nothing; once the move is finished, it deletes.
func TestDeleteOrgDuringMove(t *testing.T) {
	h := newHarness(t)
	tok, _ := h.operator(store.ScopeWrite, nil)
	var org map[string]any
	h.must(201, "POST", "/admin/v1/organizations", tok, map[string]any{"name": "moving"}).json(t, &org)
	id := uuid.MustParse(org["id"].(string))
	t.Cleanup(func() { h.admin.DeleteOrg(context.Background(), id) })
	// A mover that dies during its hold leaves the move in progress.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := h.admin.MoveOrg(ctx, id, store.Placement{Kind: store.PlaceSchema}, store.MoveOptions{Grace: time.Hour, Progress: func(step string) {
		if strings.HasPrefix(step, "hold") {
			cancel() // the mover dies in its hold
		}
	}}); err == nil {
		t.Fatal("the move finished within its hour of grace")
	}
	if _, _, step, err := h.admin.MoveStep(context.Background(), id); err != nil || step != "hold" {
		t.Fatalf("after the mover died: step %q, %v", step, err)
	}
	var e map[string]map[string]any
	h.must(409, "DELETE", "/admin/v1/organizations/"+id.String(), tok, nil).json(t, &e)
	if e["error"]["code"] != "organization_moving" {
		t.Errorf("error %v", e)
	}
	h.must(200, "GET", "/admin/v1/organizations/"+id.String(), tok, nil)
	if _, err := h.admin.ResumeMove(context.Background(), id, store.MoveOptions{Grace: 100 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	h.must(200, "DELETE", "/admin/v1/organizations/"+id.String(), tok, nil)
}
