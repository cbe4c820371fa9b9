package main

import (
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/bulkheadhq/bulkhead/config"
)

// newRedis connects to cfg.RedisURL with the configured per-call deadline.
// It does not dial until first use.
func newRedis(cfg config.Config) (*redis.Client, error) {
	opts, err := redis.ParseURL(cfg.RedisURL.Reveal())
	if err != nil {
		return nil, fmt.Errorf("BULKHEAD_REDIS_URL: does not parse")
	}
	opts.DialTimeout = 4 * cfg.RedisTimeout
	opts.ReadTimeout = cfg.RedisTimeout
	opts.WriteTimeout = cfg.RedisTimeout
	opts.MaxRetries = 1
	opts.ContextTimeoutEnabled = true
	return redis.NewClient(opts), nil
}
