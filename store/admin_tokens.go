package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// AdminToken is an operator's token for the control plane's admin API.
// The token itself is never stored, only its SHA-256.
type AdminToken struct {
	ID        uuid.UUID  `json:"id"`
	Name      string     `json:"name"`
	Scope     string     `json:"scope"`                // ScopeRead or ScopeWrite
	ExpiresAt *time.Time `json:"expires_at,omitempty"` // nil: never
	RevokedAt *time.Time `json:"revoked_at,omitempty"` // nil: not revoked
	CreatedAt time.Time  `json:"created_at"`
}

// Scopes of admin tokens.
const (
	ScopeRead  = "read"  // every GET of the admin API
	ScopeWrite = "write" // and every change
)

// Usable reports whether the token may authenticate at time now.
func (t *AdminToken) Usable(now time.Time) bool {
	return t.RevokedAt == nil && (t.ExpiresAt == nil || now.Before(*t.ExpiresAt))
}

const adminTokenColumns = `id, name, scope, expires_at, revoked_at, created_at`

// CreateAdminToken stores a new operator token by its hash. The audit row
// is installation-wide (no organization).
func (a *Admin) CreateAdminToken(ctx context.Context, name, scope string, hash [32]byte, expires *time.Time) (AdminToken, error) {
	var t AdminToken
	err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `INSERT INTO admin_tokens (name, scope, token_hash, expires_at) VALUES ($1, $2, $3, $4)
			RETURNING `+adminTokenColumns, name, scope, hash[:], expires).
			Scan(&t.ID, &t.Name, &t.Scope, &t.ExpiresAt, &t.RevokedAt, &t.CreatedAt)
		if err != nil {
			return err
		}
		return audit(ctx, tx, uuid.Nil, a.actor, "admin_token.create", t.ID.String(), map[string]any{"name": name, "scope": scope})
	})
	if err != nil {
		return AdminToken{}, fmt.Errorf("creating admin token: %w", classify(err))
	}
	return t, nil
}

// AdminTokens lists every operator token, oldest first, revoked ones
// included.
func (a *Admin) AdminTokens(ctx context.Context) ([]AdminToken, error) {
	rows, err := a.pool.Query(ctx, `SELECT `+adminTokenColumns+` FROM admin_tokens ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("listing admin tokens: %w", err)
	}
	ts, err := pgx.CollectRows(rows, pgx.RowToStructByPos[AdminToken])
	if err != nil {
		return nil, fmt.Errorf("listing admin tokens: %w", err)
	}
	return ts, nil
}

// RevokeAdminToken revokes token id now (again: keeps the first time).
func (a *Admin) RevokeAdminToken(ctx context.Context, id uuid.UUID) (AdminToken, error) {
	var t AdminToken
	err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `UPDATE admin_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1
			RETURNING `+adminTokenColumns, id).Scan(&t.ID, &t.Name, &t.Scope, &t.ExpiresAt, &t.RevokedAt, &t.CreatedAt)
		if err != nil {
			return err
		}
		return audit(ctx, tx, uuid.Nil, a.actor, "admin_token.revoke", id.String(), nil)
	})
	if err != nil {
		return AdminToken{}, fmt.Errorf("revoking admin token %s: %w", id, classify(err))
	}
	return t, nil
}

// AdminTokenByHash finds a token by its hash (ErrNotFound if none);
// revoked and expired ones are returned as they are: check Usable.
func (a *Admin) AdminTokenByHash(ctx context.Context, hash [32]byte) (AdminToken, error) {
	var t AdminToken
	err := a.pool.QueryRow(ctx, `SELECT `+adminTokenColumns+` FROM admin_tokens WHERE token_hash = $1`, hash[:]).
		Scan(&t.ID, &t.Name, &t.Scope, &t.ExpiresAt, &t.RevokedAt, &t.CreatedAt)
	if err != nil {
		return AdminToken{}, fmt.Errorf("looking up admin token: %w", classify(err))
	}
	return t, nil
}
