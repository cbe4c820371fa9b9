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

// The key actions' statements are the functions below ending in Tx. Each
// runs inside the tenant context of the key's organization, and both the
// operator (Admin, owner role) and a tenant administrator (TenantAdmin,
// app role, in its own organization's context only) run the same ones:
// one implementation of each action.

// CreateKey stores a new key inside its organization's context.
func (a *Admin) CreateKey(ctx context.Context, nk NewKey) (Key, error) {
	k, _, err := a.CreateKeyOnce(ctx, nk, Idempotency{})
	return k, err
}

// CreateKeyOnce is CreateKey with an idempotency key: when idem.Key was
// used by this actor before, it creates nothing and returns the first
// result (without Hash) and replayed true; with another request under the
// same key it fails with ErrIdempotencyMismatch. A zero idem is CreateKey.
func (a *Admin) CreateKeyOnce(ctx context.Context, nk NewKey, idem Idempotency) (k Key, replayed bool, err error) {
	err = a.inTenant(ctx, nk.OrgID, func(tx pgx.Tx) error {
		k, err = createKeyTx(ctx, tx, a.actor, a.actor, nk, idem)
		return err
	})
	if errors.Is(err, errReplay) {
		err = replay(ctx, a.pool, a.actor, idem, &k)
		return k, err == nil, err
	}
	return k, false, keyCreateError(nk.OrgID, err)
}

// keyCreateError classifies a failed key create: a missing organization
// (a foreign key) and another tenant's (refused by RLS) are one answer.
func keyCreateError(org uuid.UUID, err error) error {
	err = classify(err)
	if errors.Is(err, ErrConflict) || errors.Is(err, ErrForbidden) {
		return fmt.Errorf("creating key: %w %s", ErrNoOrganization, org)
	}
	if err != nil {
		return fmt.Errorf("creating key: %w", err)
	}
	return nil
}

// createKeyTx inserts nk and its audit row; with an idempotency key, it
// also records the result under scope (errReplay: recorded before).
func createKeyTx(ctx context.Context, tx pgx.Tx, actor, scope string, nk NewKey, idem Idempotency) (Key, error) {
	k, err := insertKey(ctx, tx, nk)
	if err != nil {
		return Key{}, err
	}
	if err := remember(ctx, tx, nk.OrgID, scope, idem, k); err != nil {
		return Key{}, err
	}
	return k, audit(ctx, tx, nk.OrgID, actor, "key.create", k.ID.String(),
		map[string]any{"name": nk.Name, "display_prefix": nk.DisplayPrefix, "rate_limit_per_minute": nk.RateLimitPerMinute})
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
		var err error
		keys, err = listKeysTx(ctx, tx, org)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing keys: %w", classify(err))
	}
	return keys, nil
}

func listKeysTx(ctx context.Context, tx pgx.Tx, org uuid.UUID) ([]Key, error) {
	var n int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM organizations WHERE id = $1`, org).Scan(&n); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, ErrNoOrganization
	}
	rows, err := tx.Query(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE organization_id = $1 ORDER BY created_at, id`, org)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Key, error) { return scanKey(r) })
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
		k, err = revokeKeyTx(ctx, tx, a.actor, org, id)
		return err
	})
	if err != nil {
		return Key{}, fmt.Errorf("revoking key %s: %w", id, classify(err))
	}
	return k, nil
}

func revokeKeyTx(ctx context.Context, tx pgx.Tx, actor string, org, id uuid.UUID) (Key, error) {
	k, err := scanKey(tx.QueryRow(ctx, `UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
		WHERE organization_id = $1 AND id = $2 RETURNING `+keyColumns, org, id))
	if err != nil {
		return Key{}, err
	}
	return k, audit(ctx, tx, org, actor, "key.revoke", id.String(), nil)
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
		old, created, err = rotateKeyTx(ctx, tx, a.actor, org, id, overlap, nk)
		return err
	})
	if err != nil {
		return Key{}, Key{}, fmt.Errorf("rotating key %s: %w", id, classify(err))
	}
	return old, created, nil
}

func rotateKeyTx(ctx context.Context, tx pgx.Tx, actor string, org, id uuid.UUID, overlap time.Duration, nk NewKey) (old, created Key, err error) {
	old, err = scanKey(tx.QueryRow(ctx, `UPDATE api_keys
		SET expires_at = least(coalesce(expires_at, 'infinity'), now() + $3::bigint * interval '1 microsecond')
		WHERE organization_id = $1 AND id = $2 AND revoked_at IS NULL
		  AND (expires_at IS NULL OR expires_at > now())
		RETURNING `+keyColumns, org, id, overlap.Microseconds()))
	if err != nil {
		return Key{}, Key{}, err
	}
	nk.OrgID, nk.Name = org, old.Name
	nk.RateLimitPerMinute, nk.TokensPerMinute = old.RateLimitPerMinute, old.TokensPerMinute
	if created, err = insertKey(ctx, tx, nk); err != nil {
		return Key{}, Key{}, err
	}
	return old, created, audit(ctx, tx, org, actor, "key.rotate", id.String(),
		map[string]any{"successor": created.ID, "overlap": overlap.String()})
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
		k, err = updateKeyLimitsTx(ctx, tx, a.actor, org, id, rpm, tpm)
		return err
	})
	if err != nil {
		return Key{}, fmt.Errorf("updating key %s: %w", id, classify(err))
	}
	return k, nil
}

func updateKeyLimitsTx(ctx context.Context, tx pgx.Tx, actor string, org, id uuid.UUID, rpm, tpm *int) (Key, error) {
	k, err := scanKey(tx.QueryRow(ctx, `UPDATE api_keys SET
		rate_limit_per_minute = coalesce($3, rate_limit_per_minute),
		tokens_per_minute = CASE WHEN $4::int IS NULL THEN tokens_per_minute ELSE nullif($4::int, 0) END
		WHERE organization_id = $1 AND id = $2 RETURNING `+keyColumns, org, id, rpm, tpm))
	if err != nil {
		return Key{}, err
	}
	return k, audit(ctx, tx, org, actor, "key.update", id.String(),
		map[string]any{"rate_limit_per_minute": k.RateLimitPerMinute, "tokens_per_minute": k.TokensPerMinute})
}
