package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Model is one row of the model catalog (migration 00011): a shared model
// (OrgID nil), which the operator offers to every organization the access
// rules admit, or an organization's private one. Prices are per million
// tokens.
type Model struct {
	ID               uuid.UUID  `json:"id"`
	OrgID            *uuid.UUID `json:"organization_id"` // nil: shared
	Name             string     `json:"name"`
	Upstream         string     `json:"upstream"`
	InputPrice       MicroUSD   `json:"input_price_usd"`
	CachedInputPrice MicroUSD   `json:"cached_input_price_usd"`
	OutputPrice      MicroUSD   `json:"output_price_usd"`
	Enabled          bool       `json:"enabled"`
	CreatedAt        time.Time  `json:"created_at"`
	UpdatedAt        time.Time  `json:"updated_at"`
}

const modelColumns = `id, organization_id, name, upstream, input_price_micros, cached_input_price_micros,
	output_price_micros, enabled, created_at, updated_at`

func scanModel(row pgx.Row) (Model, error) {
	var m Model
	err := row.Scan(&m.ID, &m.OrgID, &m.Name, &m.Upstream, &m.InputPrice, &m.CachedInputPrice,
		&m.OutputPrice, &m.Enabled, &m.CreatedAt, &m.UpdatedAt)
	return m, err
}

// ModelRef names a catalog row: a shared model (Org nil) or an
// organization's own.
type ModelRef struct {
	Org  *uuid.UUID
	Name string
}

func (r ModelRef) String() string {
	if r.Org == nil {
		return "shared model " + r.Name
	}
	return "model " + r.Name + " of organization " + r.Org.String()
}

// ModelChanges are what UpdateModel changes; nil fields keep what is.
type ModelChanges struct {
	Upstream                                  *string
	InputPrice, CachedInputPrice, OutputPrice *MicroUSD
	Enabled                                   *bool
}

// ErrModelExists: the catalog already has a model of that name in that
// scope (shared, or the organization's own).
var ErrModelExists = errors.New("model already exists")

// inScope runs fn for a catalog change of ref's scope: inside the
// organization's tenant context, or, for a shared model, in a plain
// transaction (the owner's BYPASSRLS; shared rows belong to no tenant),
// audited installation-wide.
func (a *Admin) inScope(ctx context.Context, org *uuid.UUID, fn func(tx pgx.Tx, auditOrg uuid.UUID) error) error {
	if org == nil {
		return pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error { return fn(tx, uuid.Nil) })
	}
	return a.inTenant(ctx, *org, func(tx pgx.Tx) error { return fn(tx, *org) })
}

func validPrices(ps ...*MicroUSD) error {
	for _, p := range ps {
		if p != nil && (*p < 0 || *p > MaxPrice) {
			return fmt.Errorf("price %s per million tokens is out of range (0 to %s)", *p, MaxPrice)
		}
	}
	return nil
}

// AddModel adds m (its ID and times are set here) to the catalog. Whether
// m.Upstream names a configured upstream is the caller's check: the
// database does not know the configuration.
func (a *Admin) AddModel(ctx context.Context, m Model) (Model, error) {
	if err := validPrices(&m.InputPrice, &m.CachedInputPrice, &m.OutputPrice); err != nil {
		return Model{}, fmt.Errorf("adding model: %w", err)
	}
	var out Model
	err := a.inScope(ctx, m.OrgID, func(tx pgx.Tx, auditOrg uuid.UUID) error {
		var err error
		out, err = scanModel(tx.QueryRow(ctx, `INSERT INTO models
			(organization_id, name, upstream, input_price_micros, cached_input_price_micros, output_price_micros, enabled)
			VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING `+modelColumns,
			m.OrgID, m.Name, m.Upstream, m.InputPrice, m.CachedInputPrice, m.OutputPrice, m.Enabled))
		if err != nil {
			return err
		}
		return audit(ctx, tx, auditOrg, a.actor, "model.add", out.ID.String(), modelDetails(out))
	})
	if err != nil {
		return Model{}, fmt.Errorf("adding %s: %w", ModelRef{m.OrgID, m.Name}, catalogError(err))
	}
	return out, nil
}

// catalogError tells a duplicate name (unique violation) from a missing
// organization (foreign key violation).
func catalogError(err error) error {
	switch {
	case isCode(err, "23505"):
		return ErrModelExists
	case isCode(err, "23503"):
		return ErrNoOrganization
	}
	return classify(err)
}

func modelDetails(m Model) map[string]any {
	return map[string]any{"name": m.Name, "upstream": m.Upstream, "input_price_usd": m.InputPrice.String(),
		"cached_input_price_usd": m.CachedInputPrice.String(), "output_price_usd": m.OutputPrice.String(), "enabled": m.Enabled}
}

// Models lists the catalog, shared models first, then by organization and
// name: all of it (org nil), or what concerns org (the shared models and
// its own). A missing organization is ErrNoOrganization.
func (a *Admin) Models(ctx context.Context, org *uuid.UUID) ([]Model, error) {
	if org != nil {
		var n int
		if err := a.pool.QueryRow(ctx, `SELECT count(*) FROM organizations WHERE id = $1`, *org).Scan(&n); err != nil {
			return nil, fmt.Errorf("listing models: %w", err)
		}
		if n == 0 {
			return nil, fmt.Errorf("listing models: %w %s", ErrNoOrganization, org)
		}
	}
	rows, err := a.pool.Query(ctx, `SELECT `+modelColumns+` FROM models
		WHERE $1::uuid IS NULL OR organization_id IS NULL OR organization_id = $1
		ORDER BY organization_id NULLS FIRST, name`, org)
	if err != nil {
		return nil, fmt.Errorf("listing models: %w", err)
	}
	ms, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Model, error) { return scanModel(r) })
	if err != nil {
		return nil, fmt.Errorf("listing models: %w", err)
	}
	return ms, nil
}

// ModelByID returns the catalog row id (shared or any organization's). A
// missing one is ErrNotFound.
func (a *Admin) ModelByID(ctx context.Context, id uuid.UUID) (Model, error) {
	m, err := scanModel(a.pool.QueryRow(ctx, `SELECT `+modelColumns+` FROM models WHERE id = $1`, id))
	if err != nil {
		return Model{}, fmt.Errorf("reading model %s: %w", id, classify(err))
	}
	return m, nil
}

// ValidModelName reports whether s may name a model: what the gateway
// accepts as a model id (gateway.validModelID), 1 to 256 bytes without
// control characters.
func ValidModelName(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0xfffd {
			return false
		}
	}
	return true
}

// UpdateModel changes ref's upstream, prices or enabled flag. A missing
// model is ErrNotFound.
func (a *Admin) UpdateModel(ctx context.Context, ref ModelRef, c ModelChanges) (Model, error) {
	if err := validPrices(c.InputPrice, c.CachedInputPrice, c.OutputPrice); err != nil {
		return Model{}, fmt.Errorf("updating %s: %w", ref, err)
	}
	var out Model
	err := a.inScope(ctx, ref.Org, func(tx pgx.Tx, auditOrg uuid.UUID) error {
		var err error
		out, err = scanModel(tx.QueryRow(ctx, `UPDATE models SET
			upstream = coalesce($3, upstream),
			input_price_micros = coalesce($4, input_price_micros),
			cached_input_price_micros = coalesce($5, cached_input_price_micros),
			output_price_micros = coalesce($6, output_price_micros),
			enabled = coalesce($7, enabled), updated_at = now()
			WHERE organization_id IS NOT DISTINCT FROM $1 AND name = $2 RETURNING `+modelColumns,
			ref.Org, ref.Name, c.Upstream, c.InputPrice, c.CachedInputPrice, c.OutputPrice, c.Enabled))
		if err != nil {
			return err
		}
		return audit(ctx, tx, auditOrg, a.actor, "model.update", out.ID.String(), modelDetails(out))
	})
	if err != nil {
		return Model{}, fmt.Errorf("updating %s: %w", ref, catalogError(err))
	}
	return out, nil
}

// RemoveModel deletes ref from the catalog, with its access rules. A
// missing model is ErrNotFound.
func (a *Admin) RemoveModel(ctx context.Context, ref ModelRef) (Model, error) {
	var out Model
	err := a.inScope(ctx, ref.Org, func(tx pgx.Tx, auditOrg uuid.UUID) error {
		var err error
		out, err = scanModel(tx.QueryRow(ctx, `DELETE FROM models
			WHERE organization_id IS NOT DISTINCT FROM $1 AND name = $2 RETURNING `+modelColumns, ref.Org, ref.Name))
		if err != nil {
			return err
		}
		return audit(ctx, tx, auditOrg, a.actor, "model.remove", out.ID.String(), map[string]any{"name": out.Name})
	})
	if err != nil {
		return Model{}, fmt.Errorf("removing %s: %w", ref, catalogError(err))
	}
	return out, nil
}

// SetModelAccess grants (allowed) or revokes org's use of the shared model
// named name; it overrides BULKHEAD_MODEL_ACCESS_DEFAULT for that pair. A
// missing organization is ErrNoOrganization, a missing shared model
// ErrNotFound.
func (a *Admin) SetModelAccess(ctx context.Context, org uuid.UUID, name string, allowed bool) error {
	action := map[bool]string{true: "model.grant", false: "model.revoke"}[allowed]
	err := a.inTenant(ctx, org, func(tx pgx.Tx) error {
		var id uuid.UUID
		if err := tx.QueryRow(ctx, `SELECT id FROM models WHERE organization_id IS NULL AND name = $1`, name).Scan(&id); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO model_access (organization_id, model_id, allowed) VALUES ($1, $2, $3)
			ON CONFLICT (organization_id, model_id) DO UPDATE SET allowed = excluded.allowed, updated_at = now()`, org, id, allowed)
		if err != nil {
			return err
		}
		return audit(ctx, tx, org, a.actor, action, id.String(), map[string]any{"model": name})
	})
	if err != nil {
		return fmt.Errorf("%s %s for organization %s: %w", action, name, org, catalogError(err))
	}
	return nil
}

// CatalogEntry is a catalog row as one tenant sees it: a shared model or
// its own, with its own access rule for a shared one.
type CatalogEntry struct {
	Name             string    `json:"name"`
	Upstream         string    `json:"upstream"`
	InputPrice       MicroUSD  `json:"input_price_usd"`
	CachedInputPrice MicroUSD  `json:"cached_input_price_usd"`
	OutputPrice      MicroUSD  `json:"output_price_usd"`
	Enabled          bool      `json:"enabled"`
	Own              bool      `json:"own"`    // the tenant's private model
	Access           *bool     `json:"access"` // shared models: the tenant's grant (true) or revocation (false); nil: the default
	CreatedAt        time.Time `json:"created_at"`
}

// CatalogFor returns the catalog as org sees it, read as the app role
// inside org's tenant context: RLS alone keeps other tenants' models and
// access rules out.
func (s *Store) CatalogFor(ctx context.Context, org uuid.UUID) ([]CatalogEntry, error) {
	var out []CatalogEntry
	err := s.InTenant(ctx, org, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT m.name, m.upstream, m.input_price_micros, m.cached_input_price_micros,
				m.output_price_micros, m.enabled, m.organization_id IS NOT NULL, a.allowed, m.created_at
			FROM models m LEFT JOIN model_access a ON a.model_id = m.id`)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (CatalogEntry, error) {
			var e CatalogEntry
			err := r.Scan(&e.Name, &e.Upstream, &e.InputPrice, &e.CachedInputPrice, &e.OutputPrice, &e.Enabled, &e.Own, &e.Access, &e.CreatedAt)
			return e, err
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("reading the model catalog: %w", classify(err))
	}
	return out, nil
}

func isCode(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}
