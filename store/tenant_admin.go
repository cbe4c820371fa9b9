package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// TenantAdmin performs a tenant administrator's actions: its own
// organization's keys and nothing else. Unlike Admin it holds no owner
// connection: every action runs as the app role inside the tenant context
// of Org, the organization its credential names, so that row-level
// security, not this code, refuses another organization's rows. The ids an
// action names (an organization, a key) are looked up inside that context:
// another organization's id is not found, exactly like a missing one.
//
// The statements are the operator's (admin_keys.go): one implementation of
// each action.
type TenantAdmin struct {
	s     *Store
	org   uuid.UUID
	actor string
}

// TenantAdmin returns the actions of a tenant administrator of org; actor
// names it in the audit log (for example "jwt:alice").
func (s *Store) TenantAdmin(org uuid.UUID, actor string) *TenantAdmin {
	return &TenantAdmin{s: s, org: org, actor: actor}
}

// scope is the namespace of its idempotency keys: the actor within its
// organization.
func (t *TenantAdmin) scope() string { return t.actor + "@" + t.org.String() }

func (t *TenantAdmin) inTenant(ctx context.Context, fn func(pgx.Tx) error) error {
	return t.s.InTenant(ctx, t.org, fn)
}

// Org returns organization id if the tenant may see it: its own.
func (t *TenantAdmin) Org(ctx context.Context, id uuid.UUID) (Organization, error) {
	var o Organization
	err := t.inTenant(ctx, func(tx pgx.Tx) error {
		var err error
		o, err = orgByID(ctx, tx, id)
		return err
	})
	return o, err
}

// OrgsPage lists the organizations the tenant may see (its own), as
// Admin.OrgsPage does.
func (t *TenantAdmin) OrgsPage(ctx context.Context, after *Cursor, limit int) ([]Organization, error) {
	var orgs []Organization
	err := t.inTenant(ctx, func(tx pgx.Tx) error {
		var err error
		orgs, err = orgsPage(ctx, tx, after, limit)
		return err
	})
	return orgs, err
}

// Keys lists the keys of org, which must be the tenant's own
// (ErrNoOrganization otherwise).
func (t *TenantAdmin) Keys(ctx context.Context, org uuid.UUID) ([]Key, error) {
	var keys []Key
	err := t.inTenant(ctx, func(tx pgx.Tx) error {
		var err error
		keys, err = listKeysTx(ctx, tx, org)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing keys: %w", err)
	}
	return keys, nil
}

// CreateKeyOnce creates nk in nk.OrgID, which must be the tenant's own
// (else ErrNoOrganization, as for a missing one: RLS refuses the row), as
// Admin.CreateKeyOnce does.
func (t *TenantAdmin) CreateKeyOnce(ctx context.Context, nk NewKey, idem Idempotency) (k Key, replayed bool, err error) {
	err = t.inTenant(ctx, func(tx pgx.Tx) error {
		k, err = createKeyTx(ctx, tx, t.actor, t.scope(), nk, idem)
		return err
	})
	if errors.Is(err, errReplay) {
		err = t.inTenant(ctx, func(tx pgx.Tx) error { return replay(ctx, tx, t.scope(), idem, &k) })
		return k, err == nil, err
	}
	return k, false, keyCreateError(nk.OrgID, err)
}

// KeyOrg returns the organization of key id if the tenant may see the key.
func (t *TenantAdmin) KeyOrg(ctx context.Context, id uuid.UUID) (uuid.UUID, error) {
	var org uuid.UUID
	err := t.inTenant(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT organization_id FROM api_keys WHERE id = $1`, id).Scan(&org)
	})
	return org, err
}

// RevokeKey revokes one of the tenant's keys, as Admin.RevokeKey does.
func (t *TenantAdmin) RevokeKey(ctx context.Context, id uuid.UUID) (k Key, err error) {
	err = t.inTenant(ctx, func(tx pgx.Tx) error {
		k, err = revokeKeyTx(ctx, tx, t.actor, t.org, id)
		return err
	})
	if err != nil {
		return Key{}, fmt.Errorf("revoking key %s: %w", id, err)
	}
	return k, nil
}

// RotateKey rotates one of the tenant's keys, as Admin.RotateKey does.
func (t *TenantAdmin) RotateKey(ctx context.Context, id uuid.UUID, overlap time.Duration, nk NewKey) (old, created Key, err error) {
	err = t.inTenant(ctx, func(tx pgx.Tx) error {
		old, created, err = rotateKeyTx(ctx, tx, t.actor, t.org, id, overlap, nk)
		return err
	})
	if err != nil {
		return Key{}, Key{}, fmt.Errorf("rotating key %s: %w", id, err)
	}
	return old, created, nil
}

// UpdateKeyLimits changes one of the tenant's keys' limits, as
// Admin.UpdateKeyLimits does.
func (t *TenantAdmin) UpdateKeyLimits(ctx context.Context, id uuid.UUID, rpm, tpm *int) (k Key, err error) {
	err = t.inTenant(ctx, func(tx pgx.Tx) error {
		k, err = updateKeyLimitsTx(ctx, tx, t.actor, t.org, id, rpm, tpm)
		return err
	})
	if err != nil {
		return Key{}, fmt.Errorf("updating key %s: %w", id, err)
	}
	return k, nil
}
