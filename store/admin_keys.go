package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// NewKey is what CreateKey stores. The caller generates the key and passes
// only its hash and display prefix.
type NewKey struct {
	OrgID              uuid.UUID
	Hash               [32]byte
	DisplayPrefix      string
	Name               string
	RateLimitPerMinute int
	TokensPerMinute    int        // 0: no token limit
	ExpiresAt          *time.Time // nil: never
}

// ErrNoOrganization: the organization named by an admin action does not exist.
var ErrNoOrganization = errors.New("no such organization")

// CreateKey stores a new key inside its organization's context.
func (a *Admin) CreateKey(ctx context.Context, nk NewKey) (Key, error) {
	var k Key
	err := a.inTenant(ctx, nk.OrgID, func(tx pgx.Tx) error {
		var err error
		k, err = insertKey(ctx, tx, nk)
		if err != nil {
			return err
		}
		return audit(ctx, tx, nk.OrgID, a.actor, "key.create", k.ID.String(),
			map[string]any{"name": nk.Name, "display_prefix": nk.DisplayPrefix, "rate_limit_per_minute": nk.RateLimitPerMinute})
	})
	if errors.Is(classify(err), ErrConflict) {
		return Key{}, fmt.Errorf("creating key: %w %s", ErrNoOrganization, nk.OrgID)
	}
	if err != nil {
		return Key{}, fmt.Errorf("creating key: %w", classify(err))
	}
	return k, nil
}

func insertKey(ctx context.Context, tx pgx.Tx, nk NewKey) (Key, error) {
	var tpm *int
	if nk.TokensPerMinute > 0 {
		tpm = &nk.TokensPerMinute
	}
	return scanKey(tx.QueryRow(ctx, `INSERT INTO api_keys
		(organization_id, key_hash, display_prefix, name, rate_limit_per_minute, tokens_per_minute, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING `+keyColumns,
		nk.OrgID, nk.Hash[:], nk.DisplayPrefix, nk.Name, nk.RateLimitPerMinute, tpm, nk.ExpiresAt))
}

// Keys lists an organization's keys, oldest first, revoked ones included.
// It fails with ErrNoOrganization when the organization does not exist.
func (a *Admin) Keys(ctx context.Context, org uuid.UUID) ([]Key, error) {
	var keys []Key
	err := a.inTenant(ctx, org, func(tx pgx.Tx) error {
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM organizations WHERE id = $1`, org).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return ErrNoOrganization
		}
		rows, err := tx.Query(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE organization_id = $1 ORDER BY created_at, id`, org)
		if err != nil {
			return err
		}
		keys, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Key, error) { return scanKey(r) })
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing keys: %w", classify(err))
	}
	return keys, nil
}

// KeyOrg finds the organization of key id (owner role: across tenants).
func (a *Admin) KeyOrg(ctx context.Context, id uuid.UUID) (uuid.UUID, error) {
	var org uuid.UUID
	err := a.pool.QueryRow(ctx, `SELECT organization_id FROM api_keys WHERE id = $1`, id).Scan(&org)
	return org, classify(err)
}

// RevokeKey revokes key id now. Revoking a revoked key keeps the first
// revocation time and succeeds, so that a failed cache invalidation can be
// retried. It returns the key, whose Hash the caller invalidates in caches.
func (a *Admin) RevokeKey(ctx context.Context, id uuid.UUID) (Key, error) {
	org, err := a.KeyOrg(ctx, id)
	if err != nil {
		return Key{}, fmt.Errorf("revoking key %s: %w", id, err)
	}
	var k Key
	err = a.inTenant(ctx, org, func(tx pgx.Tx) error {
		var err error
		k, err = scanKey(tx.QueryRow(ctx, `UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
			WHERE organization_id = $1 AND id = $2 RETURNING `+keyColumns, org, id))
		if err != nil {
			return err
		}
		return audit(ctx, tx, org, a.actor, "key.revoke", id.String(), nil)
	})
	if err != nil {
		return Key{}, fmt.Errorf("revoking key %s: %w", id, classify(err))
	}
	return k, nil
}

// RotateKey creates a successor of key id with the same organization, name
// and limits, from nk's Hash and DisplayPrefix, and makes the old key expire
// after overlap (or keeps its earlier expiry). A revoked or expired key
// cannot be rotated (ErrNotFound). It returns the old key as updated and
// the new one.
func (a *Admin) RotateKey(ctx context.Context, id uuid.UUID, overlap time.Duration, nk NewKey) (old, created Key, err error) {
	org, err := a.KeyOrg(ctx, id)
	if err != nil {
		return Key{}, Key{}, fmt.Errorf("rotating key %s: %w", id, err)
	}
	err = a.inTenant(ctx, org, func(tx pgx.Tx) error {
		var err error
		old, err = scanKey(tx.QueryRow(ctx, `UPDATE api_keys
			SET expires_at = least(coalesce(expires_at, 'infinity'), now() + $3::bigint * interval '1 microsecond')
			WHERE organization_id = $1 AND id = $2 AND revoked_at IS NULL
			  AND (expires_at IS NULL OR expires_at > now())
			RETURNING `+keyColumns, org, id, overlap.Microseconds()))
		if err != nil {
			return err
		}
		nk.OrgID, nk.Name = org, old.Name
		nk.RateLimitPerMinute, nk.TokensPerMinute = old.RateLimitPerMinute, old.TokensPerMinute
		if created, err = insertKey(ctx, tx, nk); err != nil {
			return err
		}
		return audit(ctx, tx, org, a.actor, "key.rotate", id.String(),
			map[string]any{"successor": created.ID, "overlap": overlap.String()})
	})
	if err != nil {
		return Key{}, Key{}, fmt.Errorf("rotating key %s: %w", id, classify(err))
	}
	return old, created, nil
}

// UpdateKeyLimits changes a key's requests and tokens per minute (nil
// keeps a value; a tokens limit of 0 removes it). It returns the key, whose
// Hash the caller invalidates in caches so that every instance applies the
// new limits at once.
func (a *Admin) UpdateKeyLimits(ctx context.Context, id uuid.UUID, rpm, tpm *int) (Key, error) {
	org, err := a.KeyOrg(ctx, id)
	if err != nil {
		return Key{}, fmt.Errorf("updating key %s: %w", id, err)
	}
	var k Key
	err = a.inTenant(ctx, org, func(tx pgx.Tx) error {
		var err error
		k, err = scanKey(tx.QueryRow(ctx, `UPDATE api_keys SET
			rate_limit_per_minute = coalesce($3, rate_limit_per_minute),
			tokens_per_minute = CASE WHEN $4::int IS NULL THEN tokens_per_minute ELSE nullif($4::int, 0) END
			WHERE organization_id = $1 AND id = $2 RETURNING `+keyColumns, org, id, rpm, tpm))
		if err != nil {
			return err
		}
		return audit(ctx, tx, org, a.actor, "key.update", id.String(),
			map[string]any{"rate_limit_per_minute": k.RateLimitPerMinute, "tokens_per_minute": k.TokensPerMinute})
	})
	if err != nil {
		return Key{}, fmt.Errorf("updating key %s: %w", id, classify(err))
	}
	return k, nil
}
