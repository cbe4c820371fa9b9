package store_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// LookupKey, one pipelined transaction: finds a tenant's own key, not
// another tenant's (RLS alone: the statement has no organization filter),
// and leaves its connection clean and reusable whether or not it found
// one: a look-up that finds nothing must not cost a new connection.
func TestLookupKey(t *testing.T) {
	st := storetest.Open(t, store.Options{MaxConns: 1})
	owner := storetest.OwnerPool(t)
	orgs := newOrgs(t, owner, 2)
	ctx := context.Background()
	hashes := make([][32]byte, 2)
	ids := make([]uuid.UUID, 2)
	for i, org := range orgs {
		hashes[i] = sha256.Sum256([]byte("lookup " + org.String()))
		ids[i] = uuid.New()
		if _, err := owner.Exec(ctx, `INSERT INTO api_keys (organization_id, id, key_hash, display_prefix, name, rate_limit_per_minute)
			VALUES ($1, $2, $3, 'sk_l', 'lookup', 60)`, org, ids[i], hashes[i][:]); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		k, err := st.LookupKey(ctx, orgs[0], hashes[0])
		if err != nil || k.ID != ids[0] || k.OrgID != orgs[0] || k.Hash != hashes[0] {
			t.Fatalf("own key: %+v, %v", k, err)
		}
		if _, err := st.LookupKey(ctx, orgs[0], hashes[1]); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("B's key under A: err = %v, want ErrNotFound", err)
		}
		if _, err := st.LookupKey(ctx, uuid.Nil, hashes[0]); !errors.Is(err, store.ErrNoTenant) {
			t.Fatalf("no tenant: err = %v, want ErrNoTenant", err)
		}
	}
	conn := acquireOnly(t, st)
	if conn.PgConn().TxStatus() != 'I' {
		t.Errorf("connection left in transaction status %q", conn.PgConn().TxStatus())
	}
	var setting string
	if err := conn.QueryRow(ctx, `SELECT coalesce(current_setting('app.current_tenant_id', true), '')`).Scan(&setting); err != nil || setting != "" {
		t.Errorf("tenant setting after the look-ups: %q, %v", setting, err)
	}
	if n := store.NewConnsForTest(st); n != 1 {
		t.Errorf("%d connections opened for 9 look-ups on a one-connection pool, want 1", n)
	}
}

// BenchmarkLookupKey: the look-up of a key no cache knows, as one
// pipeline (LookupKey) and as the transaction it replaced (BEGIN and the
// setting, then the query, then COMMIT: three round trips).
func BenchmarkLookupKey(b *testing.B) {
	st := storetest.Open(b, store.Options{})
	owner := storetest.OwnerPool(b)
	org := newOrgs(b, owner, 1)[0]
	ctx := context.Background()
	hash := sha256.Sum256([]byte("bench " + org.String()))
	if _, err := owner.Exec(ctx, `INSERT INTO api_keys (organization_id, id, key_hash, display_prefix, name, rate_limit_per_minute)
		VALUES ($1, gen_random_uuid(), $2, 'sk_l', 'lookup', 60)`, org, hash[:]); err != nil {
		b.Fatal(err)
	}
	for range 3 { // alternate: this machine's speed drifts
		b.Run("pipeline", func(b *testing.B) {
			for b.Loop() {
				if _, err := st.LookupKey(ctx, org, hash); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("transaction", func(b *testing.B) {
			for b.Loop() {
				err := st.InTenant(ctx, org, func(tx pgx.Tx) error {
					var id uuid.UUID
					return tx.QueryRow(ctx, `SELECT id FROM api_keys WHERE key_hash = $1`, hash[:]).Scan(&id)
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
