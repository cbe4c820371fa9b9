package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// OrgAdminKey is an organization-scoped admin key (migration 00018): a
// tenant administrator's credential other than a JWT, made by an
// operator, that authorizes exactly what the tenant administrator's JWT
// does (TenantAdmin). Only its SHA-256 is stored.
type OrgAdminKey struct {
	ID            uuid.UUID  `json:"id"`
	OrgID         uuid.UUID  `json:"organization_id"`
	Name          string     `json:"name"`
	DisplayPrefix string     `json:"display_prefix"`
	ExpiresAt     *time.Time `json:"expires_at"` // nil: never
	RevokedAt     *time.Time `json:"revoked_at"` // nil: not revoked
	CreatedAt     time.Time  `json:"created_at"`
}

// Usable reports whether the key may authenticate at time now.
func (k *OrgAdminKey) Usable(now time.Time) bool {
	return k.RevokedAt == nil && (k.ExpiresAt == nil || now.Before(*k.ExpiresAt))
}

const orgAdminKeyColumns = `id, organization_id, name, display_prefix, expires_at, revoked_at, created_at`

func scanOrgAdminKey(row pgx.Row) (OrgAdminKey, error) {
	var k OrgAdminKey
	err := row.Scan(&k.ID, &k.OrgID, &k.Name, &k.DisplayPrefix, &k.ExpiresAt, &k.RevokedAt, &k.CreatedAt)
	return k, err
}

// CreateOrgAdminKey stores an admin key of org by its hash, audited in
// org's log. A missing organization is ErrNoOrganization.
func (a *Admin) CreateOrgAdminKey(ctx context.Context, org uuid.UUID, name string, hash [32]byte, display string, expires *time.Time) (OrgAdminKey, error) {
	var k OrgAdminKey
	err := a.inTenant(ctx, org, func(tx pgx.Tx) error {
		var err error
		k, err = scanOrgAdminKey(tx.QueryRow(ctx, `INSERT INTO org_admin_keys (organization_id, name, key_hash, display_prefix, expires_at)
			VALUES ($1, $2, $3, $4, $5) RETURNING `+orgAdminKeyColumns, org, name, hash[:], display, expires))
		if err != nil {
			return err
		}
		return audit(ctx, tx, org, a.actor, "org_admin_key.create", k.ID.String(), map[string]any{"name": name})
	})
	if isCode(err, "23503") {
		return OrgAdminKey{}, fmt.Errorf("creating an admin key: %w %s", ErrNoOrganization, org)
	}
	if err != nil {
		return OrgAdminKey{}, fmt.Errorf("creating an admin key: %w", classify(err))
	}
	return k, nil
}

// OrgAdminKeys lists org's admin keys, oldest first, revoked ones
// included.
func (a *Admin) OrgAdminKeys(ctx context.Context, org uuid.UUID) ([]OrgAdminKey, error) {
	var ks []OrgAdminKey
	err := a.inTenant(ctx, org, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+orgAdminKeyColumns+` FROM org_admin_keys WHERE organization_id = $1 ORDER BY created_at, id`, org)
		if err != nil {
			return err
		}
		ks, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (OrgAdminKey, error) { return scanOrgAdminKey(r) })
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing admin keys: %w", classify(err))
	}
	return ks, nil
}

// RevokeOrgAdminKey revokes admin key id now (again: keeps the first
// time), audited in its organization's log. A missing one is ErrNotFound.
func (a *Admin) RevokeOrgAdminKey(ctx context.Context, id uuid.UUID) (OrgAdminKey, error) {
	var k OrgAdminKey
	err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		var err error
		k, err = scanOrgAdminKey(tx.QueryRow(ctx, `UPDATE org_admin_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1
			RETURNING `+orgAdminKeyColumns, id))
		if err != nil {
			return err
		}
		return audit(ctx, tx, k.OrgID, a.actor, "org_admin_key.revoke", id.String(), nil)
	})
	if err != nil {
		return OrgAdminKey{}, fmt.Errorf("revoking admin key %s: %w", id, classify(err))
	}
	return k, nil
}

// OrgAdminKeyByHash finds an admin key of org by its hash, as the app role
// inside org's tenant context (the organization the key names): RLS alone
// keeps it from finding another organization's key. ErrNotFound if none;
// revoked and expired ones are returned as they are: check Usable.
func (s *Store) OrgAdminKeyByHash(ctx context.Context, org uuid.UUID, hash [32]byte) (OrgAdminKey, error) {
	var k OrgAdminKey
	err := s.inTenantRead(ctx, org, func(tx pgx.Tx) error {
		var err error
		k, err = scanOrgAdminKey(tx.QueryRow(ctx, `SELECT `+orgAdminKeyColumns+` FROM org_admin_keys WHERE key_hash = $1`, hash[:]))
		return err
	})
	if err != nil {
		return OrgAdminKey{}, fmt.Errorf("looking up admin key: %w", err) // classified by inTenantRead
	}
	return k, nil
}
