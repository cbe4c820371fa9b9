package main

import (
	"context"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway"
)

// newRedis connects to cfg.RedisURL in cfg.RedisMode (one node, a Redis
// Cluster, or a master found through Sentinels) with the configured
// per-call deadline; see config.Config.RedisOptions. It does not dial
// until first use.
func newRedis(cfg config.Config) (redis.UniversalClient, error) {
	opts, err := cfg.RedisOptions()
	if err != nil {
		return nil, err
	}
	return opts.NewClient(), nil
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
