package catalog

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
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
	if c.opts.Redis == nil {
		<-ctx.Done()
		return nil
	}
	ps := c.opts.Redis.Subscribe(ctx, InvalidationChannel)
	defer ps.Close()
	ch := ps.ChannelWithSubscriptions()
	for {
		select {
		case <-ctx.Done():
			return nil
		case msg, ok := <-ch:
			if !ok {
				return nil
			}
			switch m := msg.(type) {
			case *redis.Subscription:
				if m.Kind == "subscribe" {
					c.InvalidateAll()
				}
			case *redis.Message:
				c.apply(m.Payload)
			}
		}
	}
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
