package store

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// CatalogsFor is CatalogFor of many organizations in one round trip and
// one transaction: the gateway's batch of organizations whose catalog no
// cache holds yet (gateway/catalog). Each organization's statement runs
// under its own transaction-local tenant setting, set just before it, so
// RLS alone keeps other tenants' models and access rules out of its
// entries, as in CatalogFor; a row of another organization (a private
// model or an access rule) fails the whole batch. Every organization
// asked for is in the map, with no entries when it sees none.
func (s *Store) CatalogsFor(ctx context.Context, orgs []uuid.UUID) (map[uuid.UUID][]CatalogEntry, error) {
	out := make(map[uuid.UUID][]CatalogEntry, len(orgs))
	err := s.eachTenant(ctx, orgs, `SELECT m.name, m.upstream, m.input_price_micros, m.cached_input_price_micros,
			m.output_price_micros, m.enabled, m.organization_id, a.allowed, a.organization_id, m.created_at
		FROM models m LEFT JOIN model_access a ON a.model_id = m.id`, nil,
		func(org uuid.UUID, rows pgx.Rows) error {
			entries := []CatalogEntry{}
			for rows.Next() {
				var e CatalogEntry
				var owner, grantee *uuid.UUID
				if err := rows.Scan(&e.Name, &e.Upstream, &e.InputPrice, &e.CachedInputPrice, &e.OutputPrice,
					&e.Enabled, &owner, &e.Access, &grantee, &e.CreatedAt); err != nil {
					return err
				}
				if owner != nil && *owner != org || grantee != nil && *grantee != org {
					return fmt.Errorf("catalog row of another organization under %s's setting", org)
				}
				e.Own = owner != nil
				entries = append(entries, e)
			}
			out[org] = entries
			return rows.Err()
		})
	if err != nil {
		return nil, fmt.Errorf("reading the model catalogs: %w", err)
	}
	return out, nil
}

// BudgetsForOrgs is BudgetsFor of many organizations in one round trip
// and one transaction (gateway/budget's first read of each
// organization), each organization's statement under its own
// transaction-local tenant setting: RLS alone confines it to its
// organization's budgets, and a row of another fails the whole batch.
// Every organization asked for is in the map, with no budgets when it has
// none.
func (s *Store) BudgetsForOrgs(ctx context.Context, orgs []uuid.UUID) (map[uuid.UUID][]Budget, error) {
	out := make(map[uuid.UUID][]Budget, len(orgs))
	err := s.eachTenant(ctx, orgs, `SELECT `+budgetColumns+` FROM budgets`, nil,
		func(org uuid.UUID, rows pgx.Rows) error {
			bs := []Budget{}
			for rows.Next() {
				b, err := scanBudget(rows)
				if err != nil {
					return err
				}
				if b.OrgID != org {
					return fmt.Errorf("budget %s of another organization under %s's setting", b.ID, org)
				}
				bs = append(bs, b)
			}
			out[org] = bs
			return rows.Err()
		})
	if err != nil {
		return nil, fmt.Errorf("reading budgets: %w", err)
	}
	return out, nil
}

// eachTenant runs query once per organization of orgs (distinct), all in
// one read-only transaction sent as one pipeline: BEGIN READ ONLY, then
// per organization its transaction-local tenant setting and the query
// with args(org) (nil args: none; each statement's policies read the
// setting afresh), then COMMIT. read gets each organization's rows. A
// connection left inside the transaction by an error is destroyed by the
// pool, never reused. An organization uuid.Nil is ErrNoTenant, and
// nothing is read. LookupKeys, CatalogsFor and BudgetsForOrgs read
// through it.
//
// Its statements run on their cached generic plan (plan_cache_mode, for
// this transaction only). They are look-ups by key of small tables, and
// PostgreSQL's own choice planned LookupKeys anew at every execution: a
// custom plan for a one-key array is estimated cheaper than the generic
// plan for an array of unknown length, so the generic plan never won.
// Over a million keys that was 90 µs of planning per look-up, for the
// same plan (pg_stat_statements under the keys benchmark's Zipf mix:
// 13,693 plans for 13,683 calls; README, sizing the key caches).
func (s *Store) eachTenant(ctx context.Context, orgs []uuid.UUID, query string, args func(org uuid.UUID) []any,
	read func(org uuid.UUID, rows pgx.Rows) error) error {
	if len(orgs) == 0 {
		return nil
	}
	for _, org := range orgs {
		if org == uuid.Nil {
			return ErrNoTenant
		}
	}
	b := &pgx.Batch{}
	b.Queue("BEGIN READ ONLY")
	b.Queue("SET LOCAL plan_cache_mode = force_generic_plan")
	for _, org := range orgs {
		b.Queue("SELECT set_config('"+TenantSetting+"', $1::uuid::text, true)", org)
		var a []any
		if args != nil {
			a = args(org)
		}
		b.Queue(query, a...).Query(func(rows pgx.Rows) error { return read(org, rows) })
	}
	b.Queue("COMMIT")
	return classify(s.pool.SendBatch(ctx, b).Close())
}
