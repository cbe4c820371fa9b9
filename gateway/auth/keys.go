package auth

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/netip"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/gateway/apikey"
	"github.com/bulkheadhq/bulkhead/store"
)

// tombstone is the L2 value of a key known to be unusable (unknown,
// revoked or expired). Write-backs use SET NX, so a tombstone written by a
// revocation cannot be overwritten by a look-up that raced with it.
const tombstone = "-"

// redisKey is the L2 entry of a key hash. The braces are a Redis Cluster
// hash tag, so that each key's entries live on one shard.
func redisKey(hash [32]byte) string {
	return "bulkhead:auth:{" + hex.EncodeToString(hash[:]) + "}"
}

// l2Entry is a key as cached in Redis.
type l2Entry struct {
	Org       uuid.UUID `json:"o"`
	ID        uuid.UUID `json:"k"`
	RPM       int       `json:"r"`
	TPM       int       `json:"t,omitempty"`
	ExpiresAt int64     `json:"e,omitempty"` // unix nanoseconds; 0: never
}

func (a *Authenticator) authenticateKey(ctx context.Context, cred []byte, client netip.Addr) (*Principal, error) {
	orgSeg, ok := apikey.Check(cred)
	if !ok {
		a.n.malformed.Add(1)
		return nil, ErrUnauthenticated
	}
	hash := apikey.Hash(cred)
	if p, ok := a.keys.GetIfPresent(hash); ok {
		a.n.l1Hits.Add(1)
		if !p.usable(a.opts.Now) {
			return nil, ErrUnauthenticated
		}
		return p, nil
	}
	if _, ok := a.neg.GetIfPresent(hash); ok {
		a.n.l1Negative.Add(1)
		return nil, ErrUnauthenticated
	}
	org, err := uuid.ParseBytes(orgSeg)
	if err != nil { // unreachable after Check, but never trust a parse
		a.n.malformed.Add(1)
		return nil, ErrUnauthenticated
	}
	// Concurrent misses for one key share one look-up.
	v, err, _ := a.group.Do(string(hash[:]), func() (any, error) {
		return a.lookupKey(context.WithoutCancel(ctx), org, hash, client)
	})
	if err != nil {
		return nil, err
	}
	p := v.(*Principal)
	if !p.usable(a.opts.Now) {
		return nil, ErrUnauthenticated
	}
	return p, nil
}

// lookupKey resolves a key through L2 and L3 and fills L1. It returns
// ErrUnauthenticated for unknown or unusable keys, ErrUnavailable when
// PostgreSQL cannot answer, a *ThrottledError when client or org may not
// cause another failed L3 look-up yet.
func (a *Authenticator) lookupKey(ctx context.Context, org uuid.UUID, hash [32]byte, client netip.Addr) (*Principal, error) {
	if err := a.addressSpent(client); err != nil {
		return nil, err // no I/O at all for an address known to be guessing
	}
	if p, found, err := a.getL2(ctx, org, hash); err == nil && found {
		if p == nil {
			a.neg.Set(hash, struct{}{})
			return nil, ErrUnauthenticated
		}
		a.keys.Set(hash, p)
		return p, nil
	}

	if err := a.checkFailures(ctx, client, org); err != nil {
		return nil, err
	}
	a.n.l3Lookups.Add(1)
	lctx, cancel := context.WithTimeout(ctx, a.opts.LookupTimeout)
	k, err := a.opts.Store.LookupKey(lctx, org, hash)
	cancel()
	now := a.opts.Now()
	switch {
	case errors.Is(err, store.ErrNotFound):
		a.neg.Set(hash, struct{}{})
		a.setL2(ctx, hash, nil, a.opts.NegativeTTL)
		a.chargeFailure(ctx, client, org)
		return nil, ErrUnauthenticated
	case err != nil:
		a.n.l3Errors.Add(1)
		a.log.Warn("key look-up failed", zap.Error(err))
		return nil, ErrUnavailable
	case !k.Usable(now):
		a.neg.Set(hash, struct{}{})
		a.setL2(ctx, hash, nil, a.opts.NegativeTTL)
		a.chargeFailure(ctx, client, org)
		return nil, ErrUnauthenticated
	}
	p := principalOf(k)
	a.keys.Set(hash, p)
	a.setL2(ctx, hash, p, a.opts.RedisTTL)
	return p, nil
}

func principalOf(k store.Key) *Principal {
	var exp time.Time
	if k.ExpiresAt != nil {
		exp = *k.ExpiresAt
	}
	return keyPrincipal(k.OrgID, k.ID, k.RateLimitPerMinute, k.TokensPerMinute, exp)
}

// getL2 reads the key's Redis entry. found with a nil principal is a
// tombstone. An entry whose organization differs from the key's own org
// segment is ignored: the tenant comes from the credential, never from a
// cache.
func (a *Authenticator) getL2(ctx context.Context, org uuid.UUID, hash [32]byte) (p *Principal, found bool, err error) {
	if a.opts.Redis == nil {
		return nil, false, nil
	}
	rctx, cancel := context.WithTimeout(ctx, a.opts.RedisTimeout)
	defer cancel()
	a.n.l2Lookups.Add(1)
	val, err := a.opts.Redis.Get(rctx, redisKey(hash)).Result()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		a.n.l2Errors.Add(1)
		a.log.Debug("redis get failed; falling back to PostgreSQL", zap.Error(err))
		return nil, false, err
	}
	if val == tombstone {
		a.n.l2Hits.Add(1)
		return nil, true, nil
	}
	var e l2Entry
	if err := json.Unmarshal([]byte(val), &e); err != nil || e.Org != org {
		return nil, false, errors.New("auth: unusable redis entry")
	}
	a.n.l2Hits.Add(1)
	var exp time.Time
	if e.ExpiresAt != 0 {
		exp = time.Unix(0, e.ExpiresAt)
	}
	return keyPrincipal(e.Org, e.ID, e.RPM, e.TPM, exp), true, nil
}

// setL2 writes the key's Redis entry if there is none (p nil: a tombstone).
// Failures only cost a later look-up, so they are counted, not returned.
func (a *Authenticator) setL2(ctx context.Context, hash [32]byte, p *Principal, ttl time.Duration) {
	if a.opts.Redis == nil {
		return
	}
	val := tombstone
	if p != nil {
		e := l2Entry{Org: p.Org, ID: p.KeyID, RPM: p.RateLimitPerMinute, TPM: p.TokensPerMinute}
		if !p.expiresAt.IsZero() {
			e.ExpiresAt = p.expiresAt.UnixNano()
		}
		b, _ := json.Marshal(e) // cannot fail: fixed types
		val = string(b)
	}
	rctx, cancel := context.WithTimeout(ctx, a.opts.RedisTimeout)
	defer cancel()
	if err := a.opts.Redis.SetNX(rctx, redisKey(hash), val, ttl).Err(); err != nil {
		a.n.l2Errors.Add(1)
		a.log.Debug("redis set failed", zap.Error(err))
	}
}
