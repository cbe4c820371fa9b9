package control

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// Budgets over HTTP: an operator sets an organization budget and a key
// budget of A, replaces one, lists and removes them, each audited under
// its token; bad bodies are 400s naming the field; B's key, a missing
// organization and a missing scope are refused as the CLI refuses them;
// B's administrator cannot read A's budgets (404, as a missing
// organization) nor set any; a read token cannot either.
func TestBudgetsAPI(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	a, _ := h.admin.CreateOrg(ctx, "budgets a")
	b, _ := h.admin.CreateOrg(ctx, "budgets b")
	ka, err := h.admin.CreateKey(ctx, store.NewKey{OrgID: a.ID, Hash: randomHash(), Name: "a", DisplayPrefix: "sk_a", RateLimitPerMinute: 60})
	if err != nil {
		t.Fatal(err)
	}
	kb, err := h.admin.CreateKey(ctx, store.NewKey{OrgID: b.ID, Hash: randomHash(), Name: "b", DisplayPrefix: "sk_b", RateLimitPerMinute: 60})
	if err != nil {
		t.Fatal(err)
	}
	write, tokID := h.operator(store.ScopeWrite, nil)
	read, _ := h.operator(store.ScopeRead, nil)
	path := "/admin/v1/organizations/" + a.ID.String() + "/budgets"

	type budget struct {
		ID      uuid.UUID
		KeyID   *uuid.UUID `json:"api_key_id"`
		Limit   string     `json:"limit_usd"`
		Window  string
		AlertAt []int `json:"alert_at_permille"`
	}
	var org, key budget
	h.must(200, "PUT", path, write, map[string]any{"usd": "25", "window": "month", "alert_at_permille": []int{800, 1000}}).json(t, &org)
	if org.Limit != "25" || org.Window != "month" || org.KeyID != nil || len(org.AlertAt) != 2 {
		t.Errorf("set %+v, want the organization's $25 a month, alerts at 80%% and 100%%", org)
	}
	h.must(200, "PUT", path, write, map[string]any{"api_key_id": ka.ID.String(), "usd": "1.5", "window": "rolling:6h"}).json(t, &key)
	var again budget
	h.must(200, "PUT", path, write, map[string]any{"usd": "30", "window": "day"}).json(t, &again)
	if again.ID != org.ID || again.Limit != "30" || again.Window != "day" {
		t.Errorf("replaced %+v, want the same budget at $30 a day", again)
	}
	for _, bad := range []struct {
		body  map[string]any
		param string
	}{
		{map[string]any{"usd": "0", "window": "day"}, "usd"},
		{map[string]any{"usd": "-1", "window": "day"}, "usd"},
		{map[string]any{"usd": "1e9999", "window": "day"}, "usd"},
		{map[string]any{"usd": "1", "window": "week"}, "window"},
		{map[string]any{"usd": "1", "window": "rolling:1s"}, "window"},
		{map[string]any{"usd": "1", "window": "day", "alert_at_permille": []int{0}}, "alert_at_permille"},
		{map[string]any{"usd": "1", "window": "day", "api_key_id": "nope"}, "api_key_id"},
		{map[string]any{"usd": "1", "window": "day", "api_key_id": kb.ID.String()}, "api_key_id"}, // B's key
		{map[string]any{"usd": "1", "window": "day", "end_user": ""}, "end_user"},
	} {
		r := h.do("PUT", path, write, bad.body)
		if _, param, _ := r.errorParts(t); r.status != 400 || param != bad.param {
			t.Errorf("set %v: %d %s, want 400 naming %s", bad.body, r.status, r.body, bad.param)
		}
	}
	if r := h.do("PUT", "/admin/v1/organizations/"+uuid.NewString()+"/budgets", write, map[string]any{"usd": "1", "window": "day"}); r.status != 404 {
		t.Errorf("a missing organization: %d %s, want 404", r.status, r.body)
	}
	if r := h.do("PUT", path, read, map[string]any{"usd": "1", "window": "day"}); r.status != 403 {
		t.Errorf("a read token setting a budget: %d %s, want 403", r.status, r.body)
	}

	var list struct{ Data []budget }
	h.must(200, "GET", path, read, nil).json(t, &list)
	if len(list.Data) != 2 {
		t.Errorf("A's budgets: %+v, want its organization's and its key's", list.Data)
	}
	// B's administrator: A's budgets are a missing organization's; B's own
	// list is empty; no change allowed.
	bAdmin := tenantJWT(t, b.ID, "admin", time.Now().Add(time.Hour))
	if r := h.do("GET", path, bAdmin, nil); r.status != 404 {
		t.Errorf("B's administrator reading A's budgets: %d %s, want 404", r.status, r.body)
	}
	h.must(200, "GET", "/admin/v1/organizations/"+b.ID.String()+"/budgets", bAdmin, nil).json(t, &list)
	if len(list.Data) != 0 {
		t.Errorf("B's administrator sees %+v", list.Data)
	}
	if r := h.do("PUT", "/admin/v1/organizations/"+b.ID.String()+"/budgets", bAdmin, map[string]any{"usd": "1000", "window": "day"}); r.status != 403 {
		t.Errorf("B's administrator setting its own budget: %d %s, want 403 (operators' only)", r.status, r.body)
	}
	aAdmin := tenantJWT(t, a.ID, "admin", time.Now().Add(time.Hour))
	h.must(200, "GET", path, aAdmin, nil).json(t, &list)
	if len(list.Data) != 2 {
		t.Errorf("A's administrator sees %d budgets, want 2", len(list.Data))
	}

	h.must(200, "POST", path+"/remove", write, map[string]any{"api_key_id": ka.ID.String()})
	if r := h.do("POST", path+"/remove", write, map[string]any{"api_key_id": ka.ID.String()}); r.status != 404 {
		t.Errorf("removing it again: %d %s, want 404", r.status, r.body)
	}
	rows, _ := storetest.OwnerPool(t).Query(ctx, `SELECT action FROM audit_log WHERE actor = $1 AND organization_id = $2 ORDER BY id`,
		"token:"+tokID.String(), a.ID)
	var actions []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		actions = append(actions, s)
	}
	if want := []string{"budget.set", "budget.set", "budget.set", "budget.remove"}; len(actions) != len(want) {
		t.Errorf("audited %v, want %v", actions, want)
	}
}

func randomHash() (h [32]byte) {
	rand.Read(h[:]) //nolint:errcheck // never fails
	return h
}
