package auth

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/gateway/internal/batch"
	"github.com/bulkheadhq/bulkhead/store"
)

// Look-ups beyond L1 batch: the keys that L1 does not know, from
// concurrent requests, share one Redis pipeline reading their L2 entries;
// those Redis does not know share one PostgreSQL transaction
// (store.LookupKeys: one round trip, one statement per organization, RLS
// as for one key) and one Redis pipeline writing their L2 entries back.
// Batches start as gateway/internal/batch's Runner starts them: at once
// when none runs, a second beside a running one only when a whole batch
// waits or the running one is slow. At most 2 run at once, which bounds
// the pool connections the key look-ups hold, and a flood of unknown keys
// makes batches of no more than 128 keys. Concurrent look-ups of one key
// were already one look-up (singleflight, keys.go).

// pendingKey is a key waiting for its batch: of L2 reads, then, if Redis
// did not know it, of L3 look-ups.
type pendingKey struct {
	ref  store.KeyRef
	done chan struct{}

	// L2: the entry (p nil for a tombstone), found false on a miss or an
	// error.
	p       *Principal
	inRedis bool

	// L3
	key   store.Key
	found bool
	err   error
}

// batcher gathers concurrent callers' keys into batches.
type batcher struct {
	runner batch.Runner[*pendingKey]
}

// newBatcher returns a batcher whose batches run does, then wakes their
// callers.
func newBatcher(run func([]*pendingKey)) *batcher {
	b := &batcher{}
	b.runner.Run = func(keys []*pendingKey) {
		run(keys)
		for _, p := range keys {
			close(p.done)
		}
	}
	return b
}

// do queues p for the next batch and waits until its batch has run.
func (b *batcher) do(p *pendingKey) {
	p.done = make(chan struct{})
	b.runner.Add(p)
	<-p.done
}

// queued is the number of keys waiting for a batch.
func (b *batcher) queued() int { return b.runner.Queued() }

// readL2 reads a batch's Redis entries in one pipeline. An entry whose
// organization differs from the one its credential names is ignored (a
// miss): the tenant comes from the credential, never from a cache.
func (a *Authenticator) readL2(batch []*pendingKey) {
	ctx, cancel := context.WithTimeout(context.Background(), a.opts.RedisTimeout)
	defer cancel()
	a.n.l2Lookups.Add(uint64(len(batch)))
	cmds := make([]*redis.StringCmd, len(batch))
	a.opts.Redis.Pipelined(ctx, func(pipe redis.Pipeliner) error { //nolint:errcheck // each command's error is read below
		for i, p := range batch {
			cmds[i] = pipe.Get(ctx, redisKey(p.ref.Hash))
		}
		return nil
	})
	for i, p := range batch {
		val, err := cmds[i].Result()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			a.n.l2Errors.Add(1)
			a.log.Debug("redis get failed; falling back to PostgreSQL", zap.Error(err))
		default:
			p.p, p.inRedis = parseL2(p.ref.Org, val)
			if p.inRedis {
				a.n.l2Hits.Add(1)
			}
		}
	}
}

// lookupL3 looks up a batch's keys in PostgreSQL, one transaction for all.
func (a *Authenticator) lookupL3(batch []*pendingKey) {
	refs := make([]store.KeyRef, len(batch))
	for i, p := range batch {
		refs[i] = p.ref
	}
	a.n.l3Queries.Add(1)
	a.n.l3Lookups.Add(uint64(len(batch)))
	ctx, cancel := context.WithTimeout(context.Background(), a.opts.LookupTimeout)
	found, err := a.opts.Store.LookupKeys(ctx, refs)
	cancel()
	if err != nil {
		a.n.l3Errors.Add(uint64(len(batch)))
		a.log.Warn("key look-up failed", zap.Int("keys", len(batch)), zap.Error(err))
	}
	for _, p := range batch {
		p.err = err
		p.key, p.found = found[p.ref]
	}
	if err == nil {
		a.writeBackL2(batch)
	}
}

// writeBackL2 warms L2 with a batch's answers (the key, or a tombstone
// for a key unknown, revoked or expired) in one pipeline, before its
// callers are woken: once a request has been answered, every replica
// finds its key in Redis.
// Entries are written only where there is none (SET NX), so a tombstone
// written by a revocation that raced with the look-up stays. Failures only
// cost a later look-up.
func (a *Authenticator) writeBackL2(batch []*pendingKey) {
	if a.opts.Redis == nil {
		return
	}
	now := a.opts.Now()
	ctx, cancel := context.WithTimeout(context.Background(), a.opts.RedisTimeout)
	defer cancel()
	_, err := a.opts.Redis.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for _, p := range batch {
			if p.found && p.key.Usable(now) {
				pipe.SetNX(ctx, redisKey(p.ref.Hash), l2Value(principalOf(p.key)), a.opts.RedisTTL)
			} else {
				pipe.SetNX(ctx, redisKey(p.ref.Hash), tombstone, a.opts.NegativeTTL)
			}
		}
		return nil
	})
	if err != nil {
		a.n.l2Errors.Add(1)
		a.log.Debug("redis write-back failed", zap.Error(err))
	}
}
