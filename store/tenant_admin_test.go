package store_test

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

func newTestKey(org uuid.UUID, name string) store.NewKey {
	var h [32]byte
	rand.Read(h[:])
	return store.NewKey{OrgID: org, Hash: h, DisplayPrefix: "sk_test", Name: name, RateLimitPerMinute: 60}
}

// A tenant administrator of B, as the app role inside B's context, cannot
// see, list, create, revoke, rotate or change anything of A's: every
// attempt answers as for a missing id, and A's key is unchanged.
func TestTenantAdminCannotReachAnotherTenant(t *testing.T) {
	admin := storetest.Admin(t)
	s := storetest.Open(t, store.Options{})
	ctx := context.Background()
	a, err := admin.CreateOrg(ctx, "tenant-admin-a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := admin.CreateOrg(ctx, "tenant-admin-b")
	if err != nil {
		t.Fatal(err)
	}
	keyA, err := admin.CreateKey(ctx, newTestKey(a.ID, "a's"))
	if err != nil {
		t.Fatal(err)
	}
	tb := s.TenantAdmin(b.ID, "jwt:bob")
	missing := uuid.New()

	if _, err := tb.Org(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("B reads A's organization: %v, want ErrNotFound", err)
	}
	if o, err := tb.Org(ctx, b.ID); err != nil || o.ID != b.ID {
		t.Errorf("B reads its own organization: %v, %v", o, err)
	}
	orgs, err := tb.OrgsPage(ctx, nil, 100)
	if err != nil || len(orgs) != 1 || orgs[0].ID != b.ID {
		t.Errorf("B's organization list: %v, %v; want only B", orgs, err)
	}
	for _, id := range []uuid.UUID{a.ID, missing} {
		if _, err := tb.Keys(ctx, id); !errors.Is(err, store.ErrNoOrganization) {
			t.Errorf("B lists the keys of %s: %v, want ErrNoOrganization", id, err)
		}
		if _, _, err := tb.CreateKeyOnce(ctx, newTestKey(id, "intruder"), store.Idempotency{}); !errors.Is(err, store.ErrNoOrganization) {
			t.Errorf("B creates a key in %s: %v, want ErrNoOrganization", id, err)
		}
	}
	rpm := 1
	for _, id := range []uuid.UUID{keyA.ID, missing} {
		if _, err := tb.KeyOrg(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("B finds key %s: %v, want ErrNotFound", id, err)
		}
		if _, err := tb.RevokeKey(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("B revokes key %s: %v, want ErrNotFound", id, err)
		}
		if _, _, err := tb.RotateKey(ctx, id, time.Hour, newTestKey(b.ID, "")); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("B rotates key %s: %v, want ErrNotFound", id, err)
		}
		if _, err := tb.UpdateKeyLimits(ctx, id, &rpm, nil); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("B updates key %s: %v, want ErrNotFound", id, err)
		}
	}
	keys, err := admin.Keys(ctx, a.ID)
	if err != nil || len(keys) != 1 || keys[0].RevokedAt != nil || keys[0].ExpiresAt != nil || keys[0].RateLimitPerMinute != 60 {
		t.Errorf("A's keys after B's attempts: %+v, %v; want the one key unchanged", keys, err)
	}

	// B's own keys: the whole life cycle, each step audited as B's actor.
	k, _, err := tb.CreateKeyOnce(ctx, newTestKey(b.ID, "b's"), store.Idempotency{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tb.UpdateKeyLimits(ctx, k.ID, &rpm, nil); err != nil {
		t.Fatal(err)
	}
	_, succ, err := tb.RotateKey(ctx, k.ID, time.Minute, newTestKey(b.ID, ""))
	if err != nil || succ.RateLimitPerMinute != 1 {
		t.Fatalf("rotating: %+v, %v", succ, err)
	}
	if _, err := tb.RevokeKey(ctx, succ.ID); err != nil {
		t.Fatal(err)
	}
	var actors []string
	rows, _ := storetest.OwnerPool(t).Query(ctx, `SELECT actor || ' ' || action FROM audit_log WHERE organization_id = $1 AND action LIKE 'key.%' ORDER BY id`, b.ID)
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		actors = append(actors, s)
	}
	want := []string{"jwt:bob key.create", "jwt:bob key.update", "jwt:bob key.rotate", "jwt:bob key.revoke"}
	if len(actors) != len(want) {
		t.Fatalf("B's audit rows %v, want %v", actors, want)
	}
	for i := range want {
		if actors[i] != want[i] {
			t.Errorf("audit row %d: %q, want %q", i, actors[i], want[i])
		}
	}
}

// The same create sent again with its Idempotency-Key, even concurrently,
// creates one organization; with another body it is refused.
func TestCreateOrgIdempotent(t *testing.T) {
	admin := storetest.Admin(t).As("token:" + uuid.NewString())
	ctx := context.Background()
	idem := store.Idempotency{Key: "signup-" + uuid.NewString()}
	rand.Read(idem.RequestHash[:])
	var wg sync.WaitGroup
	orgs := make([]store.Organization, 4)
	replays := make([]bool, 4)
	errs := make([]error, 4)
	for i := range orgs {
		wg.Go(func() {
			orgs[i], replays[i], errs[i] = admin.CreateOrgOnce(ctx, "idem", store.CaptureFull, false, idem)
		})
	}
	wg.Wait()
	fresh := 0
	for i := range orgs {
		if errs[i] != nil {
			t.Fatalf("create %d: %v", i, errs[i])
		}
		if orgs[i].ID != orgs[0].ID {
			t.Errorf("create %d made organization %s, create 0 made %s", i, orgs[i].ID, orgs[0].ID)
		}
		if !replays[i] {
			fresh++
		}
	}
	if fresh != 1 {
		t.Errorf("%d creates were not replays, want 1", fresh)
	}
	var n int
	if err := storetest.OwnerPool(t).QueryRow(ctx, `SELECT count(*) FROM organizations WHERE id = $1`, orgs[0].ID).Scan(&n); err != nil || n != 1 {
		t.Errorf("%d organizations, %v", n, err)
	}
	other := idem
	other.RequestHash[0]++
	if _, _, err := admin.CreateOrgOnce(ctx, "idem other", store.CaptureFull, false, other); !errors.Is(err, store.ErrIdempotencyMismatch) {
		t.Errorf("another request under the same key: %v, want ErrIdempotencyMismatch", err)
	}
}
