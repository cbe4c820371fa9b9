package config

import (
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Each mode reads its URL form into the matching go-redis client, with the
// deadlines, the single retry and the master-only routing that the
// gateway's fallbacks rely on, whatever the URL asked for.
func TestRedisOptionsByMode(t *testing.T) {
	c := Default()
	c.RedisTimeout = 50 * time.Millisecond

	c.RedisURL = "redis://:pw@cache:6380/3?max_retries=7&pool_size=9"
	o, err := c.RedisOptions()
	if err != nil {
		t.Fatal(err)
	}
	if s := o.Single; s == nil || o.Cluster != nil || o.Sentinel != nil ||
		s.Addr != "cache:6380" || s.DB != 3 || s.Password != "pw" || s.PoolSize != 9 ||
		s.MaxRetries != 1 || !s.ContextTimeoutEnabled || s.ReadTimeout != c.RedisTimeout || s.DialTimeout != 4*c.RedisTimeout {
		t.Errorf("single: %+v", o)
	}

	c.RedisMode = RedisCluster
	c.RedisURL = "rediss://u:pw@n1:7000/0?addr=n2:7001&addr=n3:7002"
	o, err = c.RedisOptions()
	if err != nil {
		t.Fatal(err)
	}
	if cl := o.Cluster; cl == nil || o.Single != nil || o.Sentinel != nil ||
		strings.Join(cl.Addrs, ",") != "n1:7000,n2:7001,n3:7002" || cl.Username != "u" || cl.Password != "pw" || cl.TLSConfig == nil ||
		cl.ReadOnly || cl.MaxRetries != 1 || !cl.ContextTimeoutEnabled || cl.WriteTimeout != c.RedisTimeout ||
		cl.ClusterStateReloadInterval != RedisClusterReloadInterval {
		t.Errorf("cluster: %+v", o)
	}
	if _, ok := o.NewClient().(*redis.ClusterClient); !ok {
		t.Error("cluster mode does not build a cluster client")
	}

	c.RedisMode = RedisSentinel
	c.RedisURL = "redis://s1:26379/1?addr=s2:26379&addr=s3:26379&master_name=bulkhead&password=master-pw"
	o, err = c.RedisOptions()
	if err != nil {
		t.Fatal(err)
	}
	if s := o.Sentinel; s == nil || o.Single != nil || o.Cluster != nil ||
		strings.Join(s.SentinelAddrs, ",") != "s1:26379,s2:26379,s3:26379" || s.MasterName != "bulkhead" ||
		s.Password != "master-pw" || s.SentinelPassword != "" || s.DB != 1 || s.ReplicaOnly ||
		s.MaxRetries != 1 || !s.ContextTimeoutEnabled || s.ReadTimeout != c.RedisTimeout {
		t.Errorf("sentinel: %+v", o)
	}
}

// A URL that go-redis refuses is reported without its passwords.
func TestRedisOptionsErrorsHidePasswords(t *testing.T) {
	for _, mode := range []string{RedisSingle, RedisCluster, RedisSentinel} {
		for _, raw := range []string{
			"redis://:hunter2@cache:6379/x?dial_timeout=hunter2",
			"redis://cache:6379?password=hunter2&master_name=m&max_retries=hunter2",
			"redis://:hunter2@cache:6379?addr=hunter2",
			"redis://:hunter2@[cache:6379",
		} {
			c := Default()
			c.RedisMode, c.RedisURL = mode, Secret(raw)
			err := c.Validate()
			if err == nil {
				t.Errorf("%s %s: accepted", mode, raw)
				continue
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("%s: the error shows the password: %v", mode, err)
			}
		}
	}
}
