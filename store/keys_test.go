package store_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
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

// LookupKeys, many keys of many tenants in one pipelined transaction:
// each key is found under the organization its credential names and no
// other, whatever else shares the batch (tenant B naming A's key finds
// nothing, even right after A's own statement), and the connection is
// left clean.
func TestLookupKeys(t *testing.T) {
	st := storetest.Open(t, store.Options{MaxConns: 1})
	owner := storetest.OwnerPool(t)
	orgs := newOrgs(t, owner, 3)
	ctx := context.Background()
	type key struct {
		org  uuid.UUID
		id   uuid.UUID
		hash [32]byte
	}
	var keys []key
	for i, org := range orgs {
		for j := range 2 { // two keys each: one statement reads several
			k := key{org, uuid.New(), sha256.Sum256([]byte(fmt.Sprintf("batch %d %d %s", i, j, org)))}
			if _, err := owner.Exec(ctx, `INSERT INTO api_keys (organization_id, id, key_hash, display_prefix, name, rate_limit_per_minute)
				VALUES ($1, $2, $3, 'sk_l', 'batch', 60)`, k.org, k.id, k.hash[:]); err != nil {
				t.Fatal(err)
			}
			keys = append(keys, k)
		}
	}
	// Every key under every organization, interleaved: only the pairs of
	// a key with its own organization may be found.
	var refs []store.KeyRef
	for _, k := range keys {
		for _, org := range orgs {
			refs = append(refs, store.KeyRef{Org: org, Hash: k.hash})
		}
	}
	refs = append(refs, store.KeyRef{Org: orgs[1], Hash: sha256.Sum256([]byte("nobody's"))})
	for range 3 {
		found, err := st.LookupKeys(ctx, refs)
		if err != nil {
			t.Fatal(err)
		}
		if len(found) != len(keys) {
			t.Errorf("found %d keys, want %d (each under its own organization only)", len(found), len(keys))
		}
		for _, k := range keys {
			for _, org := range orgs {
				got, ok := found[store.KeyRef{Org: org, Hash: k.hash}]
				switch {
				case org == k.org && (!ok || got.ID != k.id || got.OrgID != k.org || got.Hash != k.hash):
					t.Fatalf("own key %s: %+v, %v", k.id, got, ok)
				case org != k.org && ok:
					t.Fatalf("key %s of %s found under %s", k.id, k.org, org)
				}
			}
		}
	}
	if _, err := st.LookupKeys(ctx, []store.KeyRef{{Org: orgs[0], Hash: keys[0].hash}, {Hash: keys[0].hash}}); !errors.Is(err, store.ErrNoTenant) {
		t.Fatalf("a ref without organization: err = %v, want ErrNoTenant", err)
	}
	if found, err := st.LookupKeys(ctx, nil); err != nil || len(found) != 0 {
		t.Fatalf("no refs: %v, %v", found, err)
	}
	conn := acquireOnly(t, st)
	if conn.PgConn().TxStatus() != 'I' {
		t.Errorf("connection left in transaction status %q", conn.PgConn().TxStatus())
	}
	var setting string
	if err := conn.QueryRow(ctx, `SELECT coalesce(current_setting('app.current_tenant_id', true), '')`).Scan(&setting); err != nil || setting != "" {
		t.Errorf("tenant setting after the look-ups: %q, %v", setting, err)
	}
	// The look-up ran on its generic plan every time (orgbatch.go): not
	// planned again at each execution, and the setting that chose it
	// ended with its transaction.
	var custom, generic int64
	var mode string
	if err := conn.QueryRow(ctx, `SELECT coalesce(sum(custom_plans), 0)::bigint, coalesce(sum(generic_plans), 0)::bigint, current_setting('plan_cache_mode')
		FROM pg_prepared_statements WHERE statement LIKE '%FROM api_keys WHERE key_hash = ANY%'`).Scan(&custom, &generic, &mode); err != nil {
		t.Fatal(err)
	}
	if custom != 0 || generic < 9 || mode != "auto" {
		t.Errorf("the look-up's plans: %d custom, %d generic (want 0 and at least 9); plan_cache_mode after it %q", custom, generic, mode)
	}
}

// BenchmarkLookupKeys: 32 keys of 32 organizations no cache knows, as one
// batch (LookupKeys) and as 32 LookupKey calls; per key.
func BenchmarkLookupKeys(b *testing.B) {
	st := storetest.Open(b, store.Options{})
	owner := storetest.OwnerPool(b)
	orgs := newOrgs(b, owner, 32)
	ctx := context.Background()
	refs := make([]store.KeyRef, len(orgs))
	for i, org := range orgs {
		refs[i] = store.KeyRef{Org: org, Hash: sha256.Sum256([]byte("bench " + org.String()))}
		if _, err := owner.Exec(ctx, `INSERT INTO api_keys (organization_id, id, key_hash, display_prefix, name, rate_limit_per_minute)
			VALUES ($1, gen_random_uuid(), $2, 'sk_l', 'lookup', 60)`, org, refs[i].Hash[:]); err != nil {
			b.Fatal(err)
		}
	}
	for range 3 { // alternate: this machine's speed drifts
		b.Run("batch", func(b *testing.B) {
			for b.Loop() {
				if found, err := st.LookupKeys(ctx, refs); err != nil || len(found) != len(refs) {
					b.Fatal(len(found), err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*len(refs)), "µs/key")
		})
		b.Run("singles", func(b *testing.B) {
			for b.Loop() {
				for _, r := range refs {
					if _, err := st.LookupKey(ctx, r.Org, r.Hash); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*len(refs)), "µs/key")
		})
	}
}
