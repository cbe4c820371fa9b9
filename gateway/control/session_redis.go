package control

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// sessionKeyPrefix starts the Redis key of a console session: the prefix
// and the hex SHA-256 of its token (the token itself is never stored).
const sessionKeyPrefix = "bulkhead:session:"

// redisSessions are the console's sessions in the gateways' shared Redis,
// each a key that expires with the session: every replica knows every
// session, a restart keeps them, and a logout (DEL) ends a session on
// every replica at once. While Redis is unreachable, sessions cannot be
// opened or used (503); operator tokens, admin keys and JWTs sent as
// bearers still work.
//
// What Redis holds is what the login verified (the principal), not the
// credential: an operator's or admin key's session names the credential
// by its hash, re-checked against PostgreSQL at every use (auth.go), so a
// session forged in Redis needs a live credential's hash, which only
// PostgreSQL holds. A tenant administrator's JWT session is trusted as
// Redis holds it, as the gateways' L2 key cache is.
type redisSessions struct {
	rdb redis.UniversalClient
	ttl time.Duration
}

// storedSession is a session's value in Redis.
type storedSession struct {
	Actor     string    `json:"actor"`
	Operator  bool      `json:"operator,omitempty"`
	Write     bool      `json:"write,omitempty"`
	Org       uuid.UUID `json:"org"`
	OrgKey    bool      `json:"org_key,omitempty"`
	TokenHash []byte    `json:"token_hash,omitempty"`
	Expires   time.Time `json:"expires"`
}

func sessionKey(token string) string {
	h := sha256.Sum256([]byte(token))
	return sessionKeyPrefix + hex.EncodeToString(h[:])
}

func (s *redisSessions) create(ctx context.Context, p principal, notAfter time.Time) (string, time.Time, error) {
	now := time.Now()
	expires := sessionExpiry(now, s.ttl, notAfter)
	if !expires.After(now) {
		return "", time.Time{}, errUnauthenticated // a credential expiring now opens nothing
	}
	v := storedSession{Actor: p.actor, Operator: p.operator, Write: p.write, Org: p.org, OrgKey: p.orgKey, Expires: expires}
	if p.operator || p.orgKey {
		v.TokenHash = p.tokenHash[:]
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", time.Time{}, err
	}
	token := sessionTokenPrefix + random()
	if err := s.rdb.SetArgs(ctx, sessionKey(token), b, redis.SetArgs{Mode: "NX", ExpireAt: expires}).Err(); err != nil {
		return "", time.Time{}, sessionsUnavailable(err)
	}
	return token, expires, nil
}

func (s *redisSessions) get(ctx context.Context, token string) (principal, time.Time, bool, error) {
	b, err := s.rdb.Get(ctx, sessionKey(token)).Bytes()
	if errors.Is(err, redis.Nil) {
		return principal{}, time.Time{}, false, nil
	}
	if err != nil {
		return principal{}, time.Time{}, false, sessionsUnavailable(err)
	}
	var v storedSession
	if err := json.Unmarshal(b, &v); err != nil || !time.Now().Before(v.Expires) || (v.Operator || v.OrgKey) && len(v.TokenHash) != 32 {
		return principal{}, time.Time{}, false, nil // expired (Redis has not reaped it yet) or not ours
	}
	p := principal{actor: v.Actor, operator: v.Operator, write: v.Write, org: v.Org, orgKey: v.OrgKey, session: true}
	copy(p.tokenHash[:], v.TokenHash)
	return p, v.Expires, true, nil
}

func (s *redisSessions) end(ctx context.Context, token string) error {
	if err := s.rdb.Del(ctx, sessionKey(token)).Err(); err != nil {
		return sessionsUnavailable(err)
	}
	return nil
}
