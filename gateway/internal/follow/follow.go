// Package follow applies a Redis pub/sub channel's messages to an
// in-process cache: the one loop behind key revocation (gateway/auth) and
// catalog invalidation (gateway/catalog).
package follow

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// Channel subscribes to channel and calls apply with each message's
// payload until ctx ends. Each time the subscription is (re)established it
// calls resync first, since messages may have been missed while it was
// down. Without rdb it waits for ctx. It returns nil when ctx ends (or the
// client is closed).
func Channel(ctx context.Context, rdb redis.UniversalClient, channel string, resync func(), apply func(payload string)) error {
	if rdb == nil {
		<-ctx.Done()
		return nil
	}
	ps := rdb.Subscribe(ctx, channel)
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
					resync()
				}
			case *redis.Message:
				apply(m.Payload)
			}
		}
	}
}
