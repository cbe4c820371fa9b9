package store_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// An organization admin key resolves, as the app role, only inside its own
// organization's context: looked up in B's, A's key is not found (RLS);
// revoking it keeps it found but unusable; deleting A removes it.
func TestOrgAdminKeyIsolation(t *testing.T) {
	ctx := context.Background()
	admin, st, owner := storetest.Admin(t), storetest.Open(t, store.Options{}), storetest.OwnerPool(t)
	orgs := newOrgs(t, owner, 2)
	a, b := orgs[0], orgs[1]
	hash := sha256.Sum256([]byte("bhk_test_" + uuid.NewString()))
	k, err := admin.As("token:test").CreateOrgAdminKey(ctx, a, "a's backend", hash, "bhk_test…", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := st.OrgAdminKeyByHash(ctx, a, hash); err != nil || got.ID != k.ID || !got.Usable(time.Now()) {
		t.Fatalf("A's key in A's context: %+v, %v", got, err)
	}
	if _, err := st.OrgAdminKeyByHash(ctx, b, hash); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("A's key in B's context: %v, want ErrNotFound", err)
	}
	if _, err := admin.CreateOrgAdminKey(ctx, uuid.New(), "nobody's", sha256.Sum256([]byte(uuid.NewString())), "bhk_x…", nil); !errors.Is(err, store.ErrNoOrganization) {
		t.Errorf("a key of a missing organization: %v, want ErrNoOrganization", err)
	}
	if _, err := admin.RevokeOrgAdminKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if got, err := st.OrgAdminKeyByHash(ctx, a, hash); err != nil || got.Usable(time.Now()) {
		t.Errorf("the revoked key: %+v, %v; want found and unusable", got, err)
	}
	var audited int
	if err := owner.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE organization_id = $1 AND target = $2
		AND action IN ('org_admin_key.create', 'org_admin_key.revoke')`, a, k.ID.String()).Scan(&audited); err != nil || audited != 2 {
		t.Errorf("%d audit rows (%v), want create and revoke", audited, err)
	}
}
