package control

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/gateway/catalog"
)

// Notifier tells running gateways that keys changed, so that a revoked
// key is refused by every instance at once (as the CLI does).
type Notifier interface {
	Revoke(ctx context.Context, hashes ...[32]byte) error
	Invalidate(ctx context.Context, hashes ...[32]byte) error
	InvalidateOrg(ctx context.Context, org uuid.UUID) error
	// InvalidateCatalog: org's model catalog or access rules changed (nil:
	// the shared catalog, every organization's).
	InvalidateCatalog(ctx context.Context, org *uuid.UUID) error
}

// RedisNotifier publishes through the gateways' shared Redis (auth's
// invalidation events); ttl is BULKHEAD_AUTH_REDIS_TTL.
func RedisNotifier(rdb redis.UniversalClient, ttl time.Duration) Notifier {
	return redisNotifier{rdb, ttl}
}

type redisNotifier struct {
	rdb redis.UniversalClient
	ttl time.Duration
}

func (n redisNotifier) Revoke(ctx context.Context, hashes ...[32]byte) error {
	return auth.Revoke(ctx, n.rdb, n.ttl, hashes...)
}

func (n redisNotifier) Invalidate(ctx context.Context, hashes ...[32]byte) error {
	return auth.Invalidate(ctx, n.rdb, hashes...)
}

func (n redisNotifier) InvalidateOrg(ctx context.Context, org uuid.UUID) error {
	return auth.InvalidateOrg(ctx, n.rdb, org)
}

func (n redisNotifier) InvalidateCatalog(ctx context.Context, org *uuid.UUID) error {
	if org == nil {
		return catalog.InvalidateShared(ctx, n.rdb)
	}
	return catalog.InvalidateOrg(ctx, n.rdb, *org)
}

type nopNotifier struct{}

func (nopNotifier) Revoke(context.Context, ...[32]byte) error           { return nil }
func (nopNotifier) Invalidate(context.Context, ...[32]byte) error       { return nil }
func (nopNotifier) InvalidateOrg(context.Context, uuid.UUID) error      { return nil }
func (nopNotifier) InvalidateCatalog(context.Context, *uuid.UUID) error { return nil }
