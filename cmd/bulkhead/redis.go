package main

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway"
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

// redisLog is go-redis's process-wide logger (by default raw lines on
// stderr) carried into zap through the redacting gateway.LibraryLogger.
type redisLog struct{ gateway.LibraryLogger }

func (l redisLog) Printf(_ context.Context, format string, v ...any) {
	l.LibraryLogger.Printf(format, v...)
}

// routeRedisLog sends go-redis's log lines to log, redacted; with a nop
// logger (the operator commands) they are dropped.
func routeRedisLog(log *zap.Logger) {
	redis.SetLogger(redisLog{gateway.NewLibraryLogger(log.Named("redis"))})
}
