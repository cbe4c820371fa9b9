package control

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// The catalog over HTTP: an operator adds a shared model and organization
// A's own, changes, grants, revokes and removes them, each audited under
// its token and told to the gateways; organization B's administrator
// reads only what B sees (the shared model with B's rule, never A's own
// model), cannot read A's catalog (404, as a missing organization) and
// cannot change any; a read token cannot either.
func TestModelCatalogAPI(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	a, _ := h.admin.CreateOrg(ctx, "catalog a")
	b, _ := h.admin.CreateOrg(ctx, "catalog b")
	write, tokID := h.operator(store.ScopeWrite, nil)
	read, _ := h.operator(store.ScopeRead, nil)
	shared, private := "shared-"+uuid.NewString()[:8], "private-"+uuid.NewString()[:8]
	t.Cleanup(func() { // shared models are the installation's, even when the test fails
		storetest.OwnerPool(t).Exec(context.Background(), `DELETE FROM models WHERE name = $1`, shared)
	})

	// store.Model as the API answers it (prices as decimal strings).
	type model struct {
		ID      uuid.UUID
		OrgID   *uuid.UUID `json:"organization_id"`
		In      string     `json:"input_price_usd"`
		Cached  string     `json:"cached_input_price_usd"`
		Out     string     `json:"output_price_usd"`
		Enabled bool
	}
	var sm, pm model
	h.must(201, "POST", "/admin/v1/models", write, map[string]any{"name": shared, "upstream": "default",
		"input_price_usd": "0.15", "output_price_usd": "0.6"}).json(t, &sm)
	if sm.OrgID != nil || sm.Cached != "0.15" || !sm.Enabled || sm.In != "0.15" {
		t.Errorf("added %+v, want shared, enabled, cached price = input price 0.15", sm)
	}
	h.must(201, "POST", "/admin/v1/models", write, map[string]any{"name": private, "upstream": "second", "organization_id": a.ID.String(),
		"input_price_usd": "1", "output_price_usd": "2"}).json(t, &pm)
	if r := h.do("POST", "/admin/v1/models", write, map[string]any{"name": shared, "upstream": "default", "input_price_usd": "1", "output_price_usd": "1"}); r.status != 409 {
		t.Errorf("a second shared %s: %d %s, want 409", shared, r.status, r.body)
	}
	for _, bad := range []map[string]any{
		{"name": "x-" + shared, "upstream": "nowhere", "input_price_usd": "1", "output_price_usd": "1"},
		{"name": "x-" + shared, "upstream": "default", "input_price_usd": "-1", "output_price_usd": "1"},
		{"name": "x-" + shared, "upstream": "default", "input_price_usd": "1", "output_price_usd": "1", "organization_id": "nope"},
		{"name": "", "upstream": "default", "input_price_usd": "1", "output_price_usd": "1"},
	} {
		if r := h.do("POST", "/admin/v1/models", write, bad); r.status != 400 {
			t.Errorf("add %v: %d %s, want 400", bad, r.status, r.body)
		}
	}
	if r := h.do("POST", "/admin/v1/models", write, map[string]any{"name": "x-" + shared, "upstream": "default",
		"input_price_usd": "1", "output_price_usd": "1", "organization_id": uuid.NewString()}); r.status != 404 {
		t.Errorf("add to a missing organization: %d %s, want 404", r.status, r.body)
	}
	var up model
	h.must(200, "PATCH", "/admin/v1/models/"+pm.ID.String(), write, map[string]any{"output_price_usd": "3", "enabled": false}).json(t, &up)
	if up.Out != "3" || up.Enabled || up.In != "1" {
		t.Errorf("updated %+v, want output 3, disabled, input kept", up)
	}
	h.must(200, "POST", "/admin/v1/organizations/"+b.ID.String()+"/models/revoke", write, map[string]any{"model": shared})
	if r := h.do("POST", "/admin/v1/organizations/"+b.ID.String()+"/models/grant", write, map[string]any{"model": private}); r.status != 404 {
		t.Errorf("granting a private model as a shared one: %d %s, want 404", r.status, r.body)
	}

	// B's administrator: its own view, nothing of A's, no changes.
	bAdmin := tenantJWT(t, b.ID, "admin", time.Now().Add(time.Hour))
	var cat struct {
		Data []struct {
			Name   string
			Access *bool
		}
	}
	h.must(200, "GET", "/admin/v1/organizations/"+b.ID.String()+"/models", bAdmin, nil).json(t, &cat)
	var names []string
	for _, e := range cat.Data {
		names = append(names, e.Name)
		if e.Name == shared && (e.Access == nil || *e.Access) {
			t.Errorf("B sees %s with access %v, want its revocation", shared, e.Access)
		}
	}
	if !slices.Contains(names, shared) || slices.Contains(names, private) {
		t.Errorf("B's catalog %v: want %s and never A's %s", names, shared, private)
	}
	if r := h.do("GET", "/admin/v1/organizations/"+a.ID.String()+"/models", bAdmin, nil); r.status != 404 {
		t.Errorf("B reading A's catalog: %d %s, want 404", r.status, r.body)
	}
	for _, cred := range []string{bAdmin, read} {
		for _, p := range []struct {
			method, path string
			body         any
		}{
			{"GET", "/admin/v1/models", nil},
			{"POST", "/admin/v1/models", map[string]any{"name": "y-" + shared, "upstream": "default", "input_price_usd": "0", "output_price_usd": "0"}},
			{"PATCH", "/admin/v1/models/" + pm.ID.String(), map[string]any{"enabled": true}},
			{"DELETE", "/admin/v1/models/" + pm.ID.String(), nil},
			{"POST", "/admin/v1/organizations/" + b.ID.String() + "/models/grant", map[string]any{"model": shared}},
		} {
			r := h.do(p.method, p.path, cred, p.body)
			if r.status != 403 && !(cred == read && p.method == "GET" && r.status == 200) {
				t.Errorf("%s %s as %s: %d %s, want 403", p.method, p.path, map[string]string{bAdmin: "B's admin", read: "a read token"}[cred], r.status, r.body)
			}
		}
	}

	h.must(200, "DELETE", "/admin/v1/models/"+pm.ID.String(), write, nil)
	h.must(200, "DELETE", "/admin/v1/models/"+sm.ID.String(), write, nil)
	if r := h.do("DELETE", "/admin/v1/models/"+sm.ID.String(), write, nil); r.status != 404 {
		t.Errorf("removing it again: %d %s, want 404", r.status, r.body)
	}

	// Audited under the token, in A's log for A's model, installation-wide
	// for the shared one; every change told to the gateways.
	rows, _ := storetest.OwnerPool(t).Query(ctx, `SELECT action FROM audit_log WHERE actor = $1
		AND action LIKE 'model.%' ORDER BY id`, "token:"+tokID.String())
	var actions []string
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			t.Fatal(err)
		}
		actions = append(actions, a)
	}
	if want := []string{"model.add", "model.add", "model.update", "model.revoke", "model.remove", "model.remove"}; !slices.Equal(actions, want) {
		t.Errorf("audited %v, want %v", actions, want)
	}
	h.notify.mu.Lock()
	defer h.notify.mu.Unlock()
	if len(h.notify.catalogs) != 6 {
		t.Errorf("%d catalog notices, want 6 (one per change)", len(h.notify.catalogs))
	}
}
