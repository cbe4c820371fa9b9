package auth

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"time"

	"github.com/google/uuid"

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
	pk := &pendingKey{ref: store.KeyRef{Org: org, Hash: hash}}
	if a.opts.Redis != nil {
		if a.l2.do(pk); pk.inRedis {
			if pk.p == nil {
				a.neg.Set(hash, struct{}{})
				return nil, ErrUnauthenticated
			}
			a.keys.Set(hash, pk.p)
			return pk.p, nil
		}
	}

	if err := a.checkFailures(ctx, client, org); err != nil {
		return nil, err
	}
	// The batch writes L2 (the key, or a tombstone) for every key it
	// looked up before it wakes their callers.
	a.l3.do(pk)
	switch {
	case pk.err != nil:
		return nil, ErrUnavailable
	case !pk.found || !pk.key.Usable(a.opts.Now()):
		a.neg.Set(hash, struct{}{})
		a.chargeFailure(ctx, client, org)
		return nil, ErrUnauthenticated
	}
	p := principalOf(pk.key)
	a.keys.Set(hash, p)
	return p, nil
}

func principalOf(k store.Key) *Principal {
	var exp time.Time
	if k.ExpiresAt != nil {
		exp = *k.ExpiresAt
	}
	return keyPrincipal(k.OrgID, k.ID, k.RateLimitPerMinute, k.TokensPerMinute, exp)
}

// parseL2 reads a key's Redis entry: found with a nil principal is a
// tombstone. An entry of another organization than org, the key's own
// org segment, or one that does not parse, is not found.
func parseL2(org uuid.UUID, val string) (p *Principal, found bool) {
	if val == tombstone {
		return nil, true
	}
	var e l2Entry
	if err := json.Unmarshal([]byte(val), &e); err != nil || e.Org != org {
		return nil, false
	}
	var exp time.Time
	if e.ExpiresAt != 0 {
		exp = time.Unix(0, e.ExpiresAt)
	}
	return keyPrincipal(e.Org, e.ID, e.RPM, e.TPM, exp), true
}

// l2Value is a usable key's Redis entry.
func l2Value(p *Principal) string {
	e := l2Entry{Org: p.Org, ID: p.KeyID, RPM: p.RateLimitPerMinute, TPM: p.TokensPerMinute}
	if !p.expiresAt.IsZero() {
		e.ExpiresAt = p.expiresAt.UnixNano()
	}
	b, _ := json.Marshal(e) // cannot fail: fixed types
	return string(b)
}
