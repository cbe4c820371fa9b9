package storetest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RedisSentinelMaster is the name under which the Sentinels of
// StartRedisSentinel watch their master.
const RedisSentinelMaster = "bulkhead"

// RedisSentinel is a Redis master with one replica, watched by three
// Sentinels (quorum two), all of the test's own on loopback.
type RedisSentinel struct {
	// Servers are the master and the replica as started; which one is
	// the master changes with a failover (see Master).
	Servers []*RedisServer
	// Sentinels are the three Sentinels.
	Sentinels []*RedisServer
}

// StartRedisSentinel starts a master, its replica and three Sentinels for
// t, and waits until the Sentinels know the replica and each other, so
// that a failover can start at once. Its processes are killed when the
// test ends. A master is declared down after one second of silence.
func StartRedisSentinel(t testing.TB) *RedisSentinel {
	t.Helper()
	s := &RedisSentinel{}
	master := startRedis(t, "master", false, nil)
	replica := startRedis(t, "replica", false, []string{"replicaof " + hostPort(master.Addr)})
	s.Servers = []*RedisServer{master, replica}
	conf := []string{
		"sentinel monitor " + RedisSentinelMaster + " " + hostPort(master.Addr) + " 2",
		"sentinel down-after-milliseconds " + RedisSentinelMaster + " 1000",
		"sentinel failover-timeout " + RedisSentinelMaster + " 10000",
	}
	for i := range 3 {
		s.Sentinels = append(s.Sentinels, startRedis(t, fmt.Sprintf("sentinel-%d", i), true, conf))
	}
	s.waitReady(t, 30*time.Second)
	return s
}

// hostPort writes addr as Redis configuration wants it: "host port".
func hostPort(addr string) string {
	h, p, _ := net.SplitHostPort(addr)
	return h + " " + p
}

// URL is the deployment as BULKHEAD_REDIS_URL names it in sentinel mode:
// the Sentinels and the master's name.
func (s *RedisSentinel) URL() string {
	q := url.Values{}
	for _, n := range s.Sentinels[1:] {
		q.Add("addr", n.Addr)
	}
	q.Set("master_name", RedisSentinelMaster)
	return "redis://" + s.Sentinels[0].Addr + "/0?" + q.Encode()
}

// Master returns the server the live Sentinels name as the master now.
func (s *RedisSentinel) Master(t testing.TB) *RedisServer {
	t.Helper()
	for _, sn := range s.Sentinels {
		if !sn.Alive() {
			continue
		}
		rdb := sn.client()
		addr, err := rdb.Do(context.Background(), "SENTINEL", "get-master-addr-by-name", RedisSentinelMaster).StringSlice()
		rdb.Close()
		if err != nil || len(addr) != 2 {
			t.Fatalf("SENTINEL get-master-addr-by-name: %v %v", addr, err)
		}
		hp := net.JoinHostPort(addr[0], addr[1])
		for _, n := range s.Servers {
			if n.Addr == hp {
				return n
			}
		}
		t.Fatalf("the Sentinels name %s, which is not a server of this deployment", hp)
	}
	t.Fatal("every Sentinel is dead")
	return nil
}

// WaitFailover waits until every Sentinel names a live master other than
// old, and that master has taken the role.
func (s *RedisSentinel) WaitFailover(t testing.TB, old *RedisServer, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		why := s.notFailedOver(old)
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no failover after %s: %s", within, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *RedisSentinel) notFailedOver(old *RedisServer) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, sn := range s.Sentinels {
		rdb := sn.client()
		addr, err := rdb.Do(ctx, "SENTINEL", "get-master-addr-by-name", RedisSentinelMaster).StringSlice()
		rdb.Close()
		if err != nil || len(addr) != 2 {
			return fmt.Sprintf("%s: %v", sn.Addr, err)
		}
		if hp := net.JoinHostPort(addr[0], addr[1]); hp == old.Addr {
			return sn.Addr + " still names the old master"
		}
	}
	for _, n := range s.Servers {
		if n == old || !n.Alive() {
			continue
		}
		rdb := n.client()
		role, err := rdb.Do(ctx, "ROLE").Slice()
		rdb.Close()
		if err != nil || len(role) == 0 || role[0] != "master" {
			return n.Addr + " has not taken the master's role yet"
		}
	}
	return ""
}

// waitReady waits until every Sentinel sees the master up, its replica and
// the two other Sentinels, and the replica is in sync.
func (s *RedisSentinel) waitReady(t testing.TB, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		why := s.notReady()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Sentinels are not ready after %s: %s", within, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *RedisSentinel) notReady() string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, sn := range s.Sentinels {
		rdb := sn.client()
		m, err := rdb.Do(ctx, "SENTINEL", "master", RedisSentinelMaster).Slice()
		rdb.Close()
		if err != nil {
			return fmt.Sprintf("%s: %v", sn.Addr, err)
		}
		fields := map[string]string{}
		for i := 0; i+1 < len(m); i += 2 {
			fields[fmt.Sprint(m[i])] = fmt.Sprint(m[i+1])
		}
		if fields["flags"] != "master" || fields["num-slaves"] != "1" || fields["num-other-sentinels"] != strconv.Itoa(len(s.Sentinels)-1) {
			return fmt.Sprintf("%s sees flags %s, %s replicas, %s other Sentinels", sn.Addr,
				fields["flags"], fields["num-slaves"], fields["num-other-sentinels"])
		}
	}
	rdb := s.Servers[1].client()
	defer rdb.Close()
	repl, err := rdb.Info(ctx, "replication").Result()
	if err != nil {
		return err.Error()
	}
	if !strings.Contains(repl, "master_link_status:up") {
		return "the replica is not in sync"
	}
	return ""
}
