package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Key is an API key's record. The key itself is never stored: only its
// SHA-256 (Hash) and a short DisplayPrefix.
type Key struct {
	ID                 uuid.UUID  `json:"id"`
	OrgID              uuid.UUID  `json:"organization_id"`
	Hash               [32]byte   `json:"-"`
	DisplayPrefix      string     `json:"display_prefix"`
	Name               string     `json:"name"`
	RateLimitPerMinute int        `json:"rate_limit_per_minute"`
	TokensPerMinute    int        `json:"tokens_per_minute,omitempty"` // 0: no token limit
	ExpiresAt          *time.Time `json:"expires_at,omitempty"`        // nil: never
	RevokedAt          *time.Time `json:"revoked_at,omitempty"`        // nil: not revoked
	CreatedAt          time.Time  `json:"created_at"`
}

// Usable reports whether the key may authenticate at time now.
func (k *Key) Usable(now time.Time) bool {
	return k.RevokedAt == nil && (k.ExpiresAt == nil || now.Before(*k.ExpiresAt))
}

const keyColumns = `id, organization_id, key_hash, display_prefix, name, rate_limit_per_minute,
	coalesce(tokens_per_minute, 0), expires_at, revoked_at, created_at`

func scanKey(row pgx.Row) (Key, error) {
	var k Key
	var hash []byte
	err := row.Scan(&k.ID, &k.OrgID, &hash, &k.DisplayPrefix, &k.Name, &k.RateLimitPerMinute,
		&k.TokensPerMinute, &k.ExpiresAt, &k.RevokedAt, &k.CreatedAt)
	if err != nil {
		return Key{}, err
	}
	if len(hash) != len(k.Hash) {
		return Key{}, fmt.Errorf("key %s: stored hash has %d bytes", k.ID, len(hash))
	}
	copy(k.Hash[:], hash)
	return k, nil
}

// LookupKey finds a key by hash within org, as the app role and inside
// org's tenant context: RLS alone makes a key resolvable only within its
// own organization, so a key whose org segment names another tenant is not
// found. Revoked and expired keys are returned as they are; the caller
// decides with Key.Usable. A missing key is ErrNotFound.
//
// It is the request path's one database call (a key no cache knows), so
// the transaction travels as one pipeline: BEGIN READ ONLY, the tenant
// setting, the look-up and COMMIT in one round trip instead of three
// (BenchmarkLookupKey). The tenant setting is still transaction-local and
// set before the look-up; a connection left inside the transaction by an
// error is destroyed by the pool, never reused.
func (s *Store) LookupKey(ctx context.Context, org uuid.UUID, hash [32]byte) (Key, error) {
	if org == uuid.Nil {
		return Key{}, fmt.Errorf("looking up key: %w", ErrNoTenant)
	}
	b := &pgx.Batch{}
	b.Queue("BEGIN READ ONLY")
	b.Queue("SELECT set_config('"+TenantSetting+"', $1::uuid::text, true)", org)
	var k Key
	b.Queue(`SELECT `+keyColumns+` FROM api_keys WHERE key_hash = $1`, hash[:]).QueryRow(func(row pgx.Row) (err error) {
		k, err = scanKey(row)
		return err
	})
	b.Queue("COMMIT")
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return Key{}, fmt.Errorf("looking up key: %w", classify(err))
	}
	return k, nil
}

// OrgExists reports whether org exists, looked up inside its own context.
func (s *Store) OrgExists(ctx context.Context, org uuid.UUID) (bool, error) {
	var n int
	err := s.InTenant(ctx, org, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT count(*) FROM organizations WHERE id = $1`, org).Scan(&n)
	})
	if err != nil {
		return false, fmt.Errorf("looking up organization: %w", err)
	}
	return n > 0, nil
}
