package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// UseTargets gives the Admin the database targets organizations may be
// placed on (config database_targets).
func (a *Admin) UseTargets(ts []Target) { a.targets = newTargetSet(ts) }

// preparePlace makes placement p ready for the new organization org: its
// schema created (marked as ours) and migrated, or its database target's
// roles checked and its data plane migrated. Shared needs nothing.
func (a *Admin) preparePlace(ctx context.Context, org uuid.UUID, p Placement) error {
	switch p.Kind {
	case PlaceSchema:
		if err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error { return ensureSchema(ctx, tx, org) }); err != nil {
			return err
		}
		db := stdlib.OpenDB(*a.pool.Config().ConnConfig)
		defer db.Close()
		if _, err := migrateData(ctx, db, PlaceOf(org, p), mainAppRole); err != nil {
			a.discardPlace(context.WithoutCancel(ctx), org, p)
			return fmt.Errorf("migrating schema %s: %w", SchemaName(org), err)
		}
		return nil
	case PlaceDatabase:
		t, err := a.targets.get(p.Target)
		if err != nil {
			return err
		}
		_, err = walkTarget(ctx, t, true)
		return err
	}
	return nil
}

// discardPlace undoes preparePlace for an organization that was not
// created: its schema is dropped (only if it is ours). A database target
// keeps its tables, which other organizations may use.
func (a *Admin) discardPlace(ctx context.Context, org uuid.UUID, p Placement) {
	if p.Kind != PlaceSchema {
		return
	}
	// Best effort: a schema left behind is empty, marked with an id no
	// organization has, and refused by nothing (migrate skips it).
	_ = pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error { return dropSchema(ctx, tx, org) })
}

// dropSchema drops org's tenant schema and everything in it, if it is
// ours (owned by this role and marked); a schema of that name that is not
// ours is refused, never dropped.
func dropSchema(ctx context.Context, tx pgx.Tx, org uuid.UUID) error {
	var ours bool
	err := tx.QueryRow(ctx, `SELECT n.nspowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
		AND coalesce(obj_description(n.oid, 'pg_namespace'), '') = $2
		FROM pg_namespace n WHERE n.nspname = $1`, SchemaName(org), schemaMark(org)).Scan(&ours)
	if err != nil {
		if err == pgx.ErrNoRows {
			return nil // already gone
		}
		return err
	}
	if !ours {
		return fmt.Errorf("schema %s %w: not dropping it", SchemaName(org), errNotOurs)
	}
	_, err = tx.Exec(ctx, `DROP SCHEMA `+SchemaName(org)+` CASCADE`)
	return err
}

// deleteTargetRows removes org's rows from its database target (owner
// role, inside the organization's tenant context there as well).
func (a *Admin) deleteTargetRows(ctx context.Context, org uuid.UUID, p Placement) error {
	t, err := a.targets.get(p.Target)
	if err != nil {
		return err
	}
	conn, err := connectTarget(ctx, t.Name, "admin", t.AdminDSN)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return inTenant(ctx, conn, org, func(tx pgx.Tx) error {
		for _, table := range dataTables {
			if _, err := tx.Exec(ctx, `DELETE FROM public.`+table+` WHERE organization_id = $1`, org); err != nil {
				return fmt.Errorf("database target %s: deleting %s: %w", t.Name, table, err)
			}
		}
		return nil
	})
}

// applyTargetRetention deletes, in each database target, the rows of the
// organizations placed there that are past their retention (theirs, or
// the installation's default), as the target's owner inside each
// organization's tenant context, with an audit row per organization in
// the main database. A target that cannot be reached is named in the
// error; the others are done all the same.
func (a *Admin) applyTargetRetention(ctx context.Context) (int64, error) {
	rows, err := a.pool.Query(ctx, `SELECT o.id, o.placement, coalesce(o.retention_days, nullif(s.value, '')::integer, 0)
		FROM organizations o LEFT JOIN settings s ON s.name = 'retention_days'
		WHERE o.placement LIKE 'database:%' AND coalesce(o.retention_days, nullif(s.value, '')::integer, 0) > 0
		ORDER BY o.placement, o.id`)
	if err != nil {
		return 0, fmt.Errorf("retention: %w", err)
	}
	type due struct {
		Org       uuid.UUID
		Placement string
		Days      int
	}
	dues, err := pgx.CollectRows(rows, pgx.RowToStructByPos[due])
	if err != nil {
		return 0, fmt.Errorf("retention: %w", err)
	}
	var total int64
	var errs []error
	conns := map[string]*pgx.Conn{}
	defer func() {
		for _, c := range conns {
			c.Close(context.WithoutCancel(ctx))
		}
	}()
	for _, d := range dues {
		p, err := ParsePlacement(d.Placement)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		conn, ok := conns[p.Target]
		if !ok {
			t, err := a.targets.get(p.Target)
			if err == nil {
				conn, err = connectTarget(ctx, t.Name, "admin", t.AdminDSN)
			}
			if err != nil {
				errs = append(errs, err)
				conns[p.Target] = nil
				continue
			}
			conns[p.Target] = conn
		}
		if conn == nil {
			continue // already reported
		}
		var n int64
		err = inTenant(ctx, conn, d.Org, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `DELETE FROM public.prompts WHERE organization_id = $1 AND created_at < now() - make_interval(days => $2)`, d.Org, d.Days)
			n = tag.RowsAffected()
			return err
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("database target %s: %w", p.Target, err))
			continue
		}
		total += n
		if n > 0 {
			err = a.inTenant(ctx, d.Org, func(tx pgx.Tx) error {
				return audit(ctx, tx, d.Org, "retention", "retention.delete", p.String()+" prompts", map[string]any{"rows_deleted": n})
			})
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	return total, errors.Join(errs...)
}
