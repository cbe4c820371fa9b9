package storetest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisClusterNodeTimeout is the cluster-node-timeout of the clusters
// RedisCluster starts: how long a master may be silent before it is
// failed over to its replica. Production keeps Redis's default (15s);
// tests want failovers within seconds.
const RedisClusterNodeTimeout = 1000 * time.Millisecond

// RedisCluster is a Redis Cluster of the test's own: three masters, each
// with one replica, on loopback, created with redis-cli --cluster create.
type RedisCluster struct {
	// Nodes are the six servers in creation order; which are masters
	// changes with failovers (see MasterOf).
	Nodes []*RedisServer
}

// StartRedisCluster starts a cluster for t and waits until every slot is
// served and every replica is in sync with its master. Its processes are
// killed when the test ends. Without redis-server or redis-cli the test
// stops as for a missing service (Unavailable). It takes about a second.
func StartRedisCluster(t testing.TB) *RedisCluster {
	t.Helper()
	_, cli := redisBinaries(t)
	c := &RedisCluster{}
	conf := []string{
		"cluster-enabled yes",
		"cluster-config-file nodes.conf",
		"cluster-node-timeout " + strconv.Itoa(int(RedisClusterNodeTimeout.Milliseconds())),
		// Lets a replica whose link has been down for longer than usual
		// (a loaded test machine) still take over.
		"cluster-replica-validity-factor 0",
	}
	for i := range 6 {
		c.Nodes = append(c.Nodes, startRedis(t, fmt.Sprintf("cluster-%d", i), false, conf, "cluster-port"))
	}
	args := []string{"--cluster", "create"}
	args = append(args, c.addrs(c.Nodes)...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitHealthy(t, 30*time.Second)
	return c
}

func (c *RedisCluster) addrs(nodes []*RedisServer) []string {
	var a []string
	for _, n := range nodes {
		a = append(a, n.Addr)
	}
	return a
}

// Addrs are the addresses of every node, masters and replicas.
func (c *RedisCluster) Addrs() []string { return c.addrs(c.Nodes) }

// URL is the cluster as BULKHEAD_REDIS_URL names it in cluster mode: the
// first node, and the others as addr parameters.
func (c *RedisCluster) URL() string {
	q := url.Values{}
	for _, n := range c.Nodes[1:] {
		q.Add("addr", n.Addr)
	}
	return "redis://" + c.Nodes[0].Addr + "?" + q.Encode()
}

// Client returns a cluster client closed when the test ends. It reloads
// the slot map every half second, so that it follows a failover; the
// gateway's own client is built by config.Config.RedisOptions.
func (c *RedisCluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), ClusterStateReloadInterval: 500 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// live returns a plain client of some node that is alive; the caller
// closes it.
func (c *RedisCluster) live(t testing.TB) *redis.Client {
	t.Helper()
	for _, n := range c.Nodes {
		if n.Alive() {
			return n.client()
		}
	}
	t.Fatal("every node of the cluster is dead")
	return nil
}

// slotRange is a range of hash slots and the master serving it.
type slotRange struct {
	start, end int
	master     string // host:port; "" if the shard has none
}

// slots reads the slot map from a live node (CLUSTER SHARDS).
func (c *RedisCluster) slots(ctx context.Context, t testing.TB) ([]slotRange, error) {
	rdb := c.live(t)
	defer rdb.Close()
	shards, err := rdb.ClusterShards(ctx).Result()
	if err != nil {
		return nil, err
	}
	var ranges []slotRange
	for _, sh := range shards {
		var master string
		for _, n := range sh.Nodes {
			if n.Role == "master" && n.Health == "online" {
				master = net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10))
			}
		}
		for _, r := range sh.Slots {
			ranges = append(ranges, slotRange{start: int(r.Start), end: int(r.End), master: master})
		}
	}
	return ranges, nil
}

// Slot is the hash slot of key.
func (c *RedisCluster) Slot(t testing.TB, key string) int {
	t.Helper()
	rdb := c.live(t)
	defer rdb.Close()
	n, err := rdb.ClusterKeySlot(context.Background(), key).Result()
	if err != nil {
		t.Fatalf("CLUSTER KEYSLOT: %v", err)
	}
	return int(n)
}

// MasterOf returns the node that serves key's slot now, as the live nodes
// see it.
func (c *RedisCluster) MasterOf(t testing.TB, key string) *RedisServer {
	t.Helper()
	slot := c.Slot(t, key)
	slots, err := c.slots(context.Background(), t)
	if err != nil {
		t.Fatalf("CLUSTER SHARDS: %v", err)
	}
	for _, s := range slots {
		if slot >= s.start && slot <= s.end && s.master != "" {
			return c.node(t, s.master)
		}
	}
	t.Fatalf("no node serves slot %d", slot)
	return nil
}

func (c *RedisCluster) node(t testing.TB, addr string) *RedisServer {
	t.Helper()
	for _, n := range c.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	t.Fatalf("%s is not a node of this cluster", addr)
	return nil
}

// WaitHealthy waits until every live node says the cluster is ok, every
// slot is served by a live master, and every live replica of those
// masters is in sync: after StartRedisCluster, and after a master was
// killed and its replica took over.
func (c *RedisCluster) WaitHealthy(t testing.TB, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		why := c.unhealthy(t)
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Redis Cluster is not healthy after %s: %s", within, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// unhealthy says why the cluster is not healthy yet, "" if it is.
func (c *RedisCluster) unhealthy(t testing.TB) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, n := range c.Nodes {
		if !n.Alive() {
			continue
		}
		rdb := n.client()
		info, err := rdb.ClusterInfo(ctx).Result()
		var repl string
		if err == nil {
			repl, err = rdb.Info(ctx, "replication").Result()
		}
		rdb.Close()
		if err != nil {
			return fmt.Sprintf("%s: %v", n.Addr, err)
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return n.Addr + " says the cluster is not ok"
		}
		if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
			return n.Addr + " (a replica) is not in sync with its master"
		}
	}
	slots, err := c.slots(ctx, t)
	if err != nil {
		return fmt.Sprintf("CLUSTER SHARDS: %v", err)
	}
	served := 0
	for _, s := range slots {
		if s.master == "" || !c.node(t, s.master).Alive() {
			return fmt.Sprintf("slots %d-%d have no live master", s.start, s.end)
		}
		served += s.end - s.start + 1
	}
	if served != 16384 {
		return fmt.Sprintf("%d of 16384 slots are served", served)
	}
	return ""
}
