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
// decides with Key.Usable. A missing key is ErrNotFound. It is LookupKeys
// of one key.
func (s *Store) LookupKey(ctx context.Context, org uuid.UUID, hash [32]byte) (Key, error) {
	ref := KeyRef{Org: org, Hash: hash}
	found, err := s.LookupKeys(ctx, []KeyRef{ref})
	if err != nil {
		return Key{}, err
	}
	k, ok := found[ref]
	if !ok {
		return Key{}, fmt.Errorf("looking up key: %w", ErrNotFound)
	}
	return k, nil
}

// KeyRef names a key to look up: the organization its credential names
// (the tenant the look-up runs as) and the hash of the credential.
type KeyRef struct {
	Org  uuid.UUID
	Hash [32]byte
}

// LookupKeys finds many keys in one round trip and one transaction, as the
// app role: the request path's batch of keys that no cache knows (see
// gateway/auth). The keys are grouped by the organization their
// credentials name, and each group is read by its own statement under its
// own transaction-local tenant setting, set just before it (each
// statement's policy reads the setting afresh): RLS alone keeps every key
// within the organization its credential names, as in LookupKey, and no
// statement has an organization filter of its own. A row is returned
// under the ref of its own organization and hash only.
//
// The transaction travels as one pipeline (eachTenant): BEGIN READ ONLY, per
// organization the setting and `key_hash = ANY($1)`, then COMMIT
// (BenchmarkLookupKeys). A connection left inside the transaction by an
// error is destroyed by the pool, never reused. Keys not found are absent
// from the map; revoked and expired keys are present (Key.Usable decides).
// A ref without an organization is ErrNoTenant, and nothing is read.
func (s *Store) LookupKeys(ctx context.Context, refs []KeyRef) (map[KeyRef]Key, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	var orgs []uuid.UUID
	byOrg := make(map[uuid.UUID][][]byte, len(refs))
	for i := range refs {
		org := refs[i].Org
		if _, ok := byOrg[org]; !ok {
			orgs = append(orgs, org)
		}
		byOrg[org] = append(byOrg[org], refs[i].Hash[:])
	}
	found := make(map[KeyRef]Key, len(refs))
	err := s.eachTenant(ctx, orgs, `SELECT `+keyColumns+` FROM api_keys WHERE key_hash = ANY($1)`,
		func(org uuid.UUID) []any { return []any{byOrg[org]} },
		func(org uuid.UUID, rows pgx.Rows) error {
			for rows.Next() {
				k, err := scanKey(rows)
				if err != nil {
					return err
				}
				if k.OrgID != org { // RLS let another tenant's row through: refuse it all
					return fmt.Errorf("key %s of another organization under %s's setting", k.ID, org)
				}
				found[KeyRef{Org: org, Hash: k.Hash}] = k
			}
			return rows.Err()
		})
	if err != nil {
		return nil, fmt.Errorf("looking up keys: %w", err)
	}
	return found, nil
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
