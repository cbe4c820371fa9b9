package auth_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway/apikey"
	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// clusterClient is a client of c built as the gateway builds its own
// (config.RedisOptions in cluster mode): one per instance, as each
// process has its own.
func clusterClient(t testing.TB, c *storetest.RedisCluster) redis.UniversalClient {
	t.Helper()
	cfg := config.Default()
	cfg.RedisMode, cfg.RedisURL, cfg.RedisTimeout = config.RedisCluster, config.Secret(c.URL()), time.Second
	o, err := cfg.RedisOptions()
	if err != nil {
		t.Fatal(err)
	}
	rdb := o.NewClient()
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// The key cache, revocation events and tenant isolation on a real Redis
// Cluster, by instances that each have their own cluster client; then the
// master that holds the invalidation channel's slot is killed, and
// revocation still reaches every instance within a second once its replica
// has taken over.
func TestCluster(t *testing.T) {
	c := storetest.StartRedisCluster(t)
	f := fixture{admin: storetest.Admin(t), st: storetest.Open(t, store.Options{}), rdb: clusterClient(t, c)}
	// Instances with their own clients, subscribed to invalidations.
	instance := func() *auth.Authenticator {
		return f.instance(t, true, func(o *auth.Options) { o.Redis = clusterClient(t, c); o.RedisTimeout = time.Second })
	}
	one, two := instance(), instance()
	ctx := context.Background()

	revoke := func(t *testing.T, rec store.Key, key string) {
		t.Helper()
		if _, err := f.admin.RevokeKey(ctx, rec.ID); err != nil {
			t.Fatal(err)
		}
		if err := auth.Revoke(ctx, f.rdb, time.Hour, rec.Hash); err != nil {
			t.Fatal(err)
		}
		for i, a := range []*auth.Authenticator{one, two} {
			took := waitFor(t, time.Second, func() bool {
				_, err := authn(a, key)
				return errors.Is(err, auth.ErrUnauthenticated)
			})
			t.Logf("instance %d rejects the revoked key after %s", i+1, took)
		}
	}

	t.Run("L2 shared", func(t *testing.T) {
		org := f.org(t)
		for i := range 6 { // keys on several masters
			key, _ := f.key(t, org, nil)
			before := two.Stats()
			if _, err := authn(one, key); err != nil {
				t.Fatal(err)
			}
			if p, err := authn(two, key); err != nil || p.Org != org {
				t.Fatalf("key %d on the second instance: %v, %v", i, p, err)
			}
			if s := two.Stats(); s.L2Hits != before.L2Hits+1 || s.L3Lookups != before.L3Lookups || s.L2Errors != 0 {
				t.Errorf("key %d: second instance %+v -> %+v, want one more L2 hit, no database look-up, no L2 error", i, before, s)
			}
		}
	})

	t.Run("revocation", func(t *testing.T) {
		org := f.org(t)
		key, rec := f.key(t, org, nil)
		for _, a := range []*auth.Authenticator{one, two} {
			if _, err := authn(a, key); err != nil {
				t.Fatal(err)
			}
		}
		revoke(t, rec, key)
		// A fresh instance finds the tombstone in the cluster.
		fresh := f.instance(t, false, func(o *auth.Options) { o.Redis = clusterClient(t, c) })
		if _, err := authn(fresh, key); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Errorf("fresh instance: err = %v", err)
		}
		if s := fresh.Stats(); s.L2Hits != 1 || s.L3Lookups != 0 {
			t.Errorf("fresh instance %+v, want the tombstone from L2", s)
		}
	})

	t.Run("tenant isolation", func(t *testing.T) {
		orgA, orgB := f.org(t), f.org(t)
		keyA, recA := f.key(t, orgA, nil)
		keyB, _ := f.key(t, orgB, nil)
		for _, a := range []*auth.Authenticator{one, two} {
			if p, err := authn(a, keyA); err != nil || p.Org != orgA {
				t.Fatalf("A's key: %v, %v", p, err)
			}
		}
		// A's secret under B's org segment (checksum fixed up), and B's
		// under A's: unknown on both instances, whatever L2 holds for A.
		for _, cred := range []string{
			withChecksum("sk_" + orgB.String() + "_" + keyA[40:83]),
			withChecksum("sk_" + orgA.String() + "_" + keyB[40:83]),
		} {
			for i, a := range []*auth.Authenticator{one, two} {
				if _, err := authn(a, cred); !errors.Is(err, auth.ErrUnauthenticated) {
					t.Errorf("instance %d: a secret under another organization's segment: err = %v", i+1, err)
				}
			}
		}
		// An L2 entry for A's key that names B (as a bug or a tampered
		// cache might) is ignored: the tenant comes from the credential.
		forged := fmt.Sprintf(`{"o":%q,"k":%q,"r":60}`, orgB, recA.ID)
		h := apikey.Hash([]byte(keyA))
		if err := f.rdb.Set(ctx, "bulkhead:auth:{"+hex.EncodeToString(h[:])+"}", forged, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		fresh := f.instance(t, false, func(o *auth.Options) { o.Redis = clusterClient(t, c) })
		if p, err := authn(fresh, keyA); err != nil || p.Org != orgA {
			t.Errorf("A's key with a forged L2 entry naming B: %v, %v", p, err)
		}
	})

	// Last: it kills a master.
	t.Run("subscriber's master killed", func(t *testing.T) {
		victim := c.MasterOf(t, auth.InvalidationChannel)
		org := f.org(t)
		key, rec := f.key(t, org, nil)
		purges := [2]uint64{one.Stats().Purges, two.Stats().Purges}
		killed := time.Now()
		victim.Kill()
		// Meanwhile keys keep working: L1, or PostgreSQL where Redis fails.
		for _, a := range []*auth.Authenticator{one, two} {
			if _, err := a.Authenticate(ctx, []byte(key), netip.Addr{}); err != nil {
				t.Errorf("a valid key while a master is down: %v", err)
			}
		}
		c.WaitHealthy(t, 30*time.Second)
		failedOver := time.Since(killed)
		// Each instance resubscribes (on the replica that took over) and
		// purges its L1, since it may have missed events meanwhile.
		for i, a := range []*auth.Authenticator{one, two} {
			waitFor(t, 10*time.Second, func() bool { return a.Stats().Purges > purges[i] })
		}
		t.Logf("master killed: cluster healthy after %s, both instances resubscribed after %s", failedOver, time.Since(killed))
		for _, a := range []*auth.Authenticator{one, two} {
			if _, err := authn(a, key); err != nil {
				t.Fatal(err)
			}
		}
		revoke(t, rec, key)
	})
}
