package control

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// An organization admin key acts as its organization's administrator:
// manages that organization's keys and reads its usage, audited under
// the key's id, and nothing else (operators' routes 403, another
// organization 404, as TestTenantAdminCannotReachAnotherOrganization
// checks route by route). A key rewritten to name another organization
// resolves nowhere; a revoked key is refused at once, and so are its
// console sessions; a read token cannot make one; the secret is never
// stored.
func TestOrgAdminKey(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	a, _ := h.admin.CreateOrg(ctx, "admin key a")
	b, _ := h.admin.CreateOrg(ctx, "admin key b")
	write, _ := h.operator(store.ScopeWrite, nil)
	read, _ := h.operator(store.ScopeRead, nil)
	if r := h.do("POST", "/admin/v1/organizations/"+b.ID.String()+"/admin-keys", read, map[string]any{"name": "x"}); r.status != 403 {
		t.Errorf("a read token making an admin key: %d %s, want 403", r.status, r.body)
	}
	if r := h.do("POST", "/admin/v1/organizations/"+uuid.NewString()+"/admin-keys", write, map[string]any{"name": "x"}); r.status != 404 {
		t.Errorf("an admin key of a missing organization: %d %s, want 404", r.status, r.body)
	}
	var bk struct{ ID, Key, DisplayPrefix string }
	h.must(201, "POST", "/admin/v1/organizations/"+b.ID.String()+"/admin-keys", write,
		map[string]any{"name": "b's backend", "expires_in_seconds": 3600}).json(t, &bk)
	if !strings.HasPrefix(bk.Key, "bhk_") || strings.Contains(bk.DisplayPrefix, bk.Key[20:]) {
		t.Fatalf("admin key %+v", bk)
	}

	var me whoami
	h.must(200, "GET", "/admin/v1/me", bk.Key, nil).json(t, &me)
	if me.Kind != "tenant_admin" || me.OrganizationID == nil || *me.OrganizationID != b.ID.String() || me.Actor != "adminkey:"+bk.ID {
		t.Errorf("me: %+v", me)
	}
	var kb struct{ ID string }
	h.must(201, "POST", "/admin/v1/organizations/"+b.ID.String()+"/keys", bk.Key, map[string]any{"name": "b", "rate_limit_per_minute": 5}).json(t, &kb)
	h.must(200, "GET", "/admin/v1/organizations/"+b.ID.String()+"/usage", bk.Key, nil)
	for _, p := range []string{"/admin/v1/usage", "/admin/v1/organizations/" + b.ID.String() + "/admin-keys", "/admin/v1/models"} {
		if r := h.do("GET", p, bk.Key, nil); r.status != 403 {
			t.Errorf("GET %s with B's admin key: %d %s, want 403", p, r.status, r.body)
		}
	}
	var actor string
	if err := storetest.OwnerPool(t).QueryRow(ctx, `SELECT actor FROM audit_log WHERE organization_id = $1 AND action = 'key.create'`, b.ID).Scan(&actor); err != nil || actor != "adminkey:"+bk.ID {
		t.Errorf("B's key audited as %q (%v), want adminkey:%s", actor, err, bk.ID)
	}

	// B's secret under A's organization: looked up in A's context, where
	// it is not.
	forged := "bhk_" + strings.ReplaceAll(a.ID.String(), "-", "") + bk.Key[len("bhk_")+32:]
	if r := h.do("GET", "/admin/v1/organizations/"+a.ID.String(), forged, nil); r.status != 401 {
		t.Errorf("B's secret naming A: %d %s, want 401", r.status, r.body)
	}
	var stored int
	if err := storetest.OwnerPool(t).QueryRow(ctx, `SELECT count(*) FROM org_admin_keys WHERE position($1::bytea IN key_hash) > 0 OR display_prefix LIKE '%' || $2 || '%'`,
		[]byte(bk.Key), bk.Key[20:40]).Scan(&stored); err != nil || stored != 0 {
		t.Errorf("the key is stored in clear (%d, %v)", stored, err)
	}

	var sess struct{ Token string }
	h.must(201, "POST", "/admin/v1/session", "", map[string]any{"credential": bk.Key}).json(t, &sess)
	h.must(200, "GET", "/admin/v1/organizations/"+b.ID.String(), sess.Token, nil)
	var list struct{ Data []store.OrgAdminKey }
	h.must(200, "GET", "/admin/v1/organizations/"+b.ID.String()+"/admin-keys", read, nil).json(t, &list)
	if len(list.Data) != 1 || list.Data[0].ID.String() != bk.ID || list.Data[0].ExpiresAt == nil {
		t.Errorf("B's admin keys: %+v", list.Data)
	}
	h.must(200, "POST", "/admin/v1/admin-keys/"+bk.ID+"/revoke", write, nil)
	for _, cred := range []string{bk.Key, sess.Token} {
		if r := h.do("GET", "/admin/v1/organizations/"+b.ID.String(), cred, nil); r.status != 401 {
			t.Errorf("revoked admin key or its session: %d %s, want 401", r.status, r.body)
		}
	}
	if r := h.do("POST", "/admin/v1/admin-keys/"+uuid.NewString()+"/revoke", write, nil); r.status != 404 {
		t.Errorf("revoking a missing admin key: %d %s, want 404", r.status, r.body)
	}
}
