package auth

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/gateway/internal/follow"
)

// InvalidationChannel is the Redis pub/sub channel on which instances learn
// of revoked or changed keys and deleted organizations. Messages are
// "k:<hex sha-256>" or "o:<organization uuid>".
//
// It is classic pub/sub, which a Redis Cluster broadcasts to every node: a
// cluster client subscribes on the master of the channel's slot and, when
// that master fails over, resubscribes on its successor (Run purges L1
// then). Sharded pub/sub would confine the messages to one shard; they are
// one per changed key, too few to be worth it.
const InvalidationChannel = "bulkhead:auth:invalidate"

// Revoke makes keys unusable on every instance: it writes a tombstone over
// each key's Redis entry (lasting ttl, which must be at least the L2 TTL
// the instances use) and publishes an invalidation for each. Call it after
// the database change has committed. It is for the admin commands.
func Revoke(ctx context.Context, rdb redis.UniversalClient, ttl time.Duration, hashes ...[32]byte) error {
	return publish(ctx, rdb, hashes, func(p redis.Pipeliner, k string) { p.Set(ctx, k, tombstone, ttl) })
}

// Invalidate drops keys' Redis entries and publishes an invalidation, so
// that every instance re-reads them from PostgreSQL (a changed limit, say).
func Invalidate(ctx context.Context, rdb redis.UniversalClient, hashes ...[32]byte) error {
	return publish(ctx, rdb, hashes, func(p redis.Pipeliner, k string) { p.Del(ctx, k) })
}

// InvalidateOrg tells every instance to forget what it knows of org (for
// JWTs: whether it exists).
func InvalidateOrg(ctx context.Context, rdb redis.UniversalClient, org uuid.UUID) error {
	if err := rdb.Publish(ctx, InvalidationChannel, "o:"+org.String()).Err(); err != nil {
		return fmt.Errorf("publishing organization invalidation: %w", err)
	}
	return nil
}

func publish(ctx context.Context, rdb redis.UniversalClient, hashes [][32]byte, write func(redis.Pipeliner, string)) error {
	if len(hashes) == 0 {
		return nil
	}
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, h := range hashes {
			write(p, redisKey(h))
			p.Publish(ctx, InvalidationChannel, "k:"+hex.EncodeToString(h[:]))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("invalidating keys in redis: %w", err)
	}
	return nil
}

// Run applies invalidation events to this instance's caches until ctx
// ends. Each time the subscription is (re)established it purges the whole
// L1, since events may have been missed while it was down. Without Redis
// it just waits for ctx. It returns nil when ctx ends.
func (a *Authenticator) Run(ctx context.Context) error {
	return follow.Channel(ctx, a.opts.Redis, InvalidationChannel, a.purge, a.apply)
}

// purge empties every L1 cache.
func (a *Authenticator) purge() {
	a.keys.InvalidateAll()
	a.neg.InvalidateAll()
	a.orgs.InvalidateAll()
	if a.opts.OrgChanged != nil {
		a.opts.OrgChanged(uuid.Nil)
	}
	a.n.purges.Add(1)
	a.log.Info("auth caches purged on (re)subscribing to invalidations")
}

func (a *Authenticator) apply(payload string) {
	kind, val, ok := strings.Cut(payload, ":")
	if !ok {
		return
	}
	switch kind {
	case "k":
		var h [32]byte
		if n, err := hex.Decode(h[:], []byte(val)); err != nil || n != len(h) {
			return
		}
		a.keys.Invalidate(h)
		a.neg.Invalidate(h)
	case "o":
		org, err := uuid.Parse(val)
		if err != nil {
			return
		}
		a.orgs.Invalidate(org)
		if a.opts.OrgChanged != nil {
			a.opts.OrgChanged(org)
		}
	default:
		return
	}
	a.n.invalidated.Add(1)
	a.log.Debug("invalidation applied", zap.String("kind", kind))
}
