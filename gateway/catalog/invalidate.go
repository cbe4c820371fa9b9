package catalog

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/bulkheadhq/bulkhead/gateway/internal/follow"
)

// InvalidationChannel is the Redis pub/sub channel on which instances
// learn of catalog changes. Messages are "o:<organization uuid>" (its own
// models or its access rules changed) or "*" (a shared model changed:
// every organization's view).
const InvalidationChannel = "bulkhead:catalog:invalidate"

// InvalidateOrg tells every instance that org's models or access changed.
// Call it after the database change has committed.
func InvalidateOrg(ctx context.Context, rdb redis.UniversalClient, org uuid.UUID) error {
	return publish(ctx, rdb, "o:"+org.String())
}

// InvalidateShared tells every instance that a shared model changed.
func InvalidateShared(ctx context.Context, rdb redis.UniversalClient) error {
	return publish(ctx, rdb, "*")
}

func publish(ctx context.Context, rdb redis.UniversalClient, msg string) error {
	if err := rdb.Publish(ctx, InvalidationChannel, msg).Err(); err != nil {
		return fmt.Errorf("publishing a catalog invalidation: %w", err)
	}
	return nil
}

// Run applies invalidation events until ctx ends. Each time the
// subscription is (re)established it drops every view, since events may
// have been missed while it was down. Without Redis it waits for ctx. It
// returns nil when ctx ends.
func (c *Catalog) Run(ctx context.Context) error {
	return follow.Channel(ctx, c.opts.Redis, InvalidationChannel, c.InvalidateAll, c.apply)
}

func (c *Catalog) apply(payload string) {
	if payload == "*" {
		c.InvalidateAll()
		return
	}
	if len(payload) > 2 && payload[:2] == "o:" {
		if org, err := uuid.Parse(payload[2:]); err == nil {
			c.Invalidate(org)
		}
	}
}
