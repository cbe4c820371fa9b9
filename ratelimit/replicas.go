package ratelimit

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// While Redis answers, each Limiter that runs Run adds itself to a sorted
// set, Prefix + ":replicas", scored with Redis TIME, every Heartbeat, drops
// the members not seen for heartbeatWindow heartbeats and keeps the count.
// When Redis goes away the count stays as last seen, and the local fallback
// admits 1/count of each budget (see local.go).
// The set is one key, so each heartbeat touches one slot of a Redis Cluster.

// heartbeatWindow is how many heartbeats a replica may miss and still be
// counted alive.
const heartbeatWindow = 3

// heartbeatScript records a replica alive and counts the live ones.
//
//	KEYS[1] the replica set
//	ARGV[1] replica id, ARGV[2] window µs
//
// Reply: the number of replicas seen within the window, this one included.
var heartbeatScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
return redis.call('ZCARD', KEYS[1])
`)

// leaveScript removes a replica from the set when it stops.
var leaveScript = redis.NewScript(`return redis.call('ZREM', KEYS[1], ARGV[1])`)

// Run reports this instance alive to the other replicas sharing the
// Limiter's Redis prefix, every Options.Heartbeat, and keeps the count of
// live replicas that the local fallback divides each budget by (see
// Stats.Replicas). It returns nil when ctx is done, after removing this
// instance from the count; at once without Redis. A failed heartbeat keeps
// the last count: while Redis is away, the fleet is assumed unchanged.
//
// Without Run the Limiter counts itself alone, and its fallback admits a
// whole budget, as a single instance would.
func (l *Limiter) Run(ctx context.Context) error {
	if l.rdb == nil {
		return nil
	}
	t := time.NewTicker(l.heartbeat)
	defer t.Stop()
	for {
		l.beat(ctx)
		select {
		case <-ctx.Done():
			l.leave(context.WithoutCancel(ctx))
			return nil
		case <-t.C:
		}
	}
}

func (l *Limiter) replicasKey() string { return l.prefix + ":replicas" }

// beat sends one heartbeat and stores the count it returns.
func (l *Limiter) beat(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	window := heartbeatWindow * l.heartbeat.Microseconds()
	n, err := heartbeatScript.Run(ctx, l.rdb, []string{l.replicasKey()}, l.id, window).Int64()
	if err != nil {
		if !errors.Is(ctx.Err(), context.Canceled) {
			l.log.Debug("ratelimit: heartbeat failed; keeping the last replica count",
				zap.Int64("replicas", l.replicas.Load()), zap.Error(err))
		}
		return
	}
	l.replicas.Store(max(n, 1))
}

// leave removes this replica from the set, so that the others stop
// counting it at their next heartbeat.
func (l *Limiter) leave(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	if err := leaveScript.Run(ctx, l.rdb, []string{l.replicasKey()}, l.id).Err(); err != nil {
		l.log.Debug("ratelimit: leaving the replica set failed; the others stop counting this replica within three heartbeats", zap.Error(err))
	}
}

// share is how many times the local fallback counts this instance's
// spending: the live replicas, each admitting its part of a budget.
func (l *Limiter) share() float64 {
	return float64(l.replicas.Load())
}
