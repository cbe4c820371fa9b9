package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The helper's cluster serves keys of every slot, and killing the master
// of a key hands its slot to the replica, which holds the key.
func TestRedisClusterFailsOver(t *testing.T) {
	start := time.Now()
	c := StartRedisCluster(t)
	t.Logf("cluster of %d nodes ready in %s", len(c.Nodes), time.Since(start))
	rdb := c.Client(t)
	ctx := context.Background()
	for i := range 100 {
		if err := rdb.Set(ctx, fmt.Sprintf("k%d", i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	old := c.MasterOf(t, "k1")
	m := old.client()
	if n, err := m.Wait(ctx, 1, 5*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT for the replica: %d, %v", n, err)
	}
	m.Close()
	start = time.Now()
	old.Kill()
	c.WaitHealthy(t, 30*time.Second)
	t.Logf("failed over in %s", time.Since(start))
	if now := c.MasterOf(t, "k1"); now == old {
		t.Fatal("the dead master still serves k1")
	}
	if v, err := rdb.Get(ctx, "k1").Int(); err != nil || v != 1 {
		t.Errorf("k1 after failover = %d, %v", v, err)
	}
}

// The helper's Sentinels promote the replica when the master dies, and a
// failover client follows them.
func TestRedisSentinelFailsOver(t *testing.T) {
	start := time.Now()
	s := StartRedisSentinel(t)
	t.Logf("master, replica and 3 Sentinels ready in %s", time.Since(start))
	var sentinels []string
	for _, sn := range s.Sentinels {
		sentinels = append(sentinels, sn.Addr)
	}
	rdb := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: RedisSentinelMaster, SentinelAddrs: sentinels})
	defer rdb.Close()
	ctx := context.Background()
	if err := rdb.Set(ctx, "k", 1, 0).Err(); err != nil {
		t.Fatal(err)
	}
	old := s.Master(t)
	if old != s.Servers[0] {
		t.Fatalf("the Sentinels name %s as the master, want %s", old.Addr, s.Servers[0].Addr)
	}
	m := old.client()
	if n, err := m.Wait(ctx, 1, 5*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT for the replica: %d, %v", n, err)
	}
	m.Close()
	start = time.Now()
	old.Kill()
	s.WaitFailover(t, old, 30*time.Second)
	t.Logf("failed over in %s", time.Since(start))
	if s.Master(t) != s.Servers[1] {
		t.Fatal("the replica is not the master")
	}
	if err := rdb.Set(ctx, "k2", 2, 0).Err(); err != nil {
		t.Errorf("writing through the failover client after the failover: %v", err)
	}
	if v, err := rdb.Get(ctx, "k").Int(); err != nil || v != 1 {
		t.Errorf("k after failover = %d, %v", v, err)
	}
}
