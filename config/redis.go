package config

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The values of BULKHEAD_REDIS_MODE.
const (
	RedisSingle   = "single"   // one Redis node (or a proxy in front of many)
	RedisCluster  = "cluster"  // Redis Cluster
	RedisSentinel = "sentinel" // a master and its replicas watched by Sentinels
)

// RedisClusterReloadInterval is how often a cluster client in use re-reads
// the slot map (one CLUSTER SLOTS). go-redis's default is a minute, and
// until the reload it sends a dead master's slots to the dead address, even
// after the master's replica has taken over: a minute during which those
// keys' limits fall back to each replica's local limiter and an instance
// subscribed to invalidations on that node hears no revocation.
const RedisClusterReloadInterval = time.Second

// RedisOptions is BULKHEAD_REDIS_URL read in BULKHEAD_REDIS_MODE, as
// go-redis options: exactly one field is set.
type RedisOptions struct {
	Single   *redis.Options
	Cluster  *redis.ClusterOptions
	Sentinel *redis.FailoverOptions
}

// NewClient returns a client for the options: a *redis.Client for single
// and sentinel mode (a failover client, which asks the Sentinels for the
// master), a *redis.ClusterClient for cluster mode. It does not dial until
// first use.
func (o RedisOptions) NewClient() redis.UniversalClient {
	switch {
	case o.Cluster != nil:
		return redis.NewClusterClient(o.Cluster)
	case o.Sentinel != nil:
		return redis.NewFailoverClient(o.Sentinel)
	}
	return redis.NewClient(o.Single)
}

// RedisOptions parses BULKHEAD_REDIS_URL according to BULKHEAD_REDIS_MODE
// and applies the settings the gateway relies on whatever the URL says:
// BULKHEAD_REDIS_TIMEOUT as the read and write deadline (four times it to
// dial), context deadlines honoured, one retry, and every command sent to
// a master. The URL forms are go-redis's (redis.ParseURL,
// redis.ParseClusterURL, redis.ParseFailoverURL). Like Validate it has no
// side effects; its errors name the variable and never carry a password.
func (c Config) RedisOptions() (RedisOptions, error) {
	const env = "BULKHEAD_REDIS_URL"
	raw := c.RedisURL.Reveal()
	fail := func(format string, args ...any) (RedisOptions, error) {
		return RedisOptions{}, fmt.Errorf("%s: %s", env, fmt.Sprintf(format, args...))
	}
	if raw == "" {
		return fail("empty: without Redis there is nothing to connect to")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" && u.Scheme != "unix" {
		return fail("want a URL like redis://host:6379/0") // url.Parse's error would quote the password
	}
	// hide keeps the URL's passwords out of go-redis's parse errors.
	hide := func(err error) string {
		msg := err.Error()
		secrets := []string{u.Query().Get("password")}
		if pw, ok := u.User.Password(); ok {
			secrets = append(secrets, pw)
		}
		for _, s := range secrets {
			if s != "" {
				msg = strings.ReplaceAll(msg, s, "xxxxx")
			}
		}
		return msg
	}
	scheme := func(allowed ...string) bool {
		for _, s := range allowed {
			if u.Scheme == s {
				return true
			}
		}
		return false
	}

	var o RedisOptions
	switch c.RedisMode {
	case RedisSingle:
		if !scheme("redis", "rediss", "unix") {
			return fail("scheme %q not allowed, want redis, rediss or unix", u.Scheme)
		}
		if u.Query().Has("addr") {
			return fail("several addresses need BULKHEAD_REDIS_MODE=cluster or sentinel")
		}
		opts, err := redis.ParseURL(raw)
		if err != nil {
			return fail("%s", hide(err))
		}
		opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = 4*c.RedisTimeout, c.RedisTimeout, c.RedisTimeout
		opts.MaxRetries, opts.ContextTimeoutEnabled = 1, true
		o.Single = opts
	case RedisCluster:
		if !scheme("redis", "rediss") {
			return fail("scheme %q not allowed in cluster mode, want redis or rediss", u.Scheme)
		}
		if p := strings.Trim(u.Path, "/"); p != "" && p != "0" {
			return fail("Redis Cluster has only database 0, got %q", p)
		}
		opts, err := redis.ParseClusterURL(raw)
		if err != nil {
			return fail("%s", hide(err))
		}
		if opts.ReadOnly || opts.RouteByLatency || opts.RouteRandomly {
			// A replica may not have the tombstone of a key revoked a
			// moment ago yet: reads from it could bring the key back.
			return fail("read_only, route_by_latency and route_randomly would read from replicas, which may lag behind a revocation")
		}
		opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = 4*c.RedisTimeout, c.RedisTimeout, c.RedisTimeout
		opts.MaxRetries, opts.ContextTimeoutEnabled = 1, true
		opts.ClusterStateReloadInterval = RedisClusterReloadInterval
		o.Cluster = opts
	case RedisSentinel:
		if !scheme("redis", "rediss") {
			return fail("scheme %q not allowed in sentinel mode, want redis or rediss", u.Scheme)
		}
		opts, err := redis.ParseFailoverURL(raw)
		if err != nil {
			return fail("%s", hide(err))
		}
		if opts.MasterName == "" {
			return fail("sentinel mode needs the master's name: ?master_name=NAME")
		}
		if opts.ReplicaOnly || opts.RouteByLatency || opts.RouteRandomly || opts.UseDisconnectedReplicas {
			return fail("replica_only, route_by_latency, route_randomly and use_disconnected_replicas would read from replicas, which may lag behind a revocation")
		}
		opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = 4*c.RedisTimeout, c.RedisTimeout, c.RedisTimeout
		opts.MaxRetries, opts.ContextTimeoutEnabled = 1, true
		o.Sentinel = opts
	default:
		return RedisOptions{}, errors.New("BULKHEAD_REDIS_MODE: want single, cluster or sentinel")
	}
	return o, nil
}
