package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// seedPlaced writes n rows of org (key) into schema.prompts of pool, as
// the owner inside org's context.
func seedPlaced(t *testing.T, pool *pgxpool.Pool, schema string, org, key uuid.UUID, n int) {
	t.Helper()
	err := pgx.BeginFunc(context.Background(), pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(context.Background(), `SELECT set_config('app.current_tenant_id', $1, true)`, org.String()); err != nil {
			return err
		}
		_, err := tx.Exec(context.Background(), fmt.Sprintf(`INSERT INTO %s.prompts (organization_id, request_id, api_key_id, model, prompt_text, response, status)
			SELECT $1, 'seed-' || g, $2, 'm1', 'prompt ' || g, 'answer ' || g, 200 FROM generate_series(1, $3::int) g`, schema), org, key, n)
		return err
	})
	if err != nil {
		t.Fatalf("seeding %s: %v", schema, err)
	}
}

// The isolation pen-test across placements: A shared, B in a schema of its
// own, C on database target t1, each with a key and rows. Each key lists
// exactly its own rows, from its own place; B's key against C's and A's
// row ids (and the reverse) answers exactly like a missing id.
func TestReadAPIAcrossPlacements(t *testing.T) {
	ts := storetest.Targets(t)
	h := newHarness(t, nil)
	h.admin.UseTargets(ts)
	h.st.UseTargets(ts, store.TargetPoolOptions{})
	ctx := context.Background()
	mk := func(p store.Placement) (store.Organization, string, store.Key) {
		o, _, err := h.admin.CreateOrgPlaced(ctx, store.NewOrg{Name: "pen " + p.String(), Capture: store.CaptureFull, Placement: p}, store.Idempotency{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.admin.DeleteOrg(context.Background(), o.ID) })
		key, k := h.key(o.ID, 1000)
		return o, key, k
	}
	A, keyA, kA := mk(store.Placement{Kind: store.PlaceShared})
	B, keyB, kB := mk(store.Placement{Kind: store.PlaceSchema})
	C, keyC, kC := mk(store.Placement{Kind: store.PlaceDatabase, Target: "t1"})
	owner := storetest.OwnerPool(t)
	t1, err := pgxpool.New(ctx, ts[0].AdminDSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(t1.Close)
	seedPlaced(t, owner, "public", A.ID, kA.ID, 2)
	seedPlaced(t, owner, store.SchemaName(B.ID), B.ID, kB.ID, 3)
	seedPlaced(t, t1, "public", C.ID, kC.ID, 4)

	ids := map[string][]uuid.UUID{}
	for _, x := range []struct {
		name, key string
		keyID     uuid.UUID
		n         int
	}{{"A", keyA, kA.ID, 2}, {"B", keyB, kB.ID, 3}, {"C", keyC, kC.ID, 4}} {
		r := h.do("GET", "/api/v1/prompts?limit=100", "", bearer(x.key)...)
		var p promptPage
		if r.status != 200 || json.Unmarshal(r.body, &p) != nil {
			t.Fatalf("%s: %d %s", x.name, r.status, r.body)
		}
		if len(p.Data) != x.n {
			t.Errorf("%s lists %d rows, want its %d", x.name, len(p.Data), x.n)
		}
		for _, row := range p.Data {
			if row.APIKeyID == nil || *row.APIKeyID != x.keyID {
				t.Errorf("%s listed a row of another tenant: %+v", x.name, row)
			}
			ids[x.name] = append(ids[x.name], row.ID)
		}
		u := h.do("GET", "/api/v1/usage", "", bearer(x.key)...)
		if u.status != 200 {
			t.Errorf("%s usage: %d %s", x.name, u.status, u.body)
		}
	}
	keys := map[string]string{"A": keyA, "B": keyB, "C": keyC}
	for _, pair := range [][2]string{{"B", "C"}, {"B", "A"}, {"C", "B"}, {"A", "B"}, {"A", "C"}, {"C", "A"}} {
		for _, id := range ids[pair[1]] {
			r := h.do("GET", "/api/v1/prompts/"+id.String(), "", bearer(keys[pair[0]])...)
			if r.status != 404 {
				t.Errorf("%s's key reading %s's row %s: %d %s, want 404", pair[0], pair[1], id, r.status, r.body)
			}
		}
	}
}
