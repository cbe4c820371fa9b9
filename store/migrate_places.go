package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// PlaceStatus is one place's data-plane migration state.
type PlaceStatus struct {
	// Place names it: shared, schema t_..., database:NAME.
	Place string `json:"place"`
	// Org is the organization of a tenant schema.
	Org *uuid.UUID `json:"organization_id,omitempty"`
	// Version is its data-plane version after the run; Latest the newest
	// there is.
	Version int64 `json:"version"`
	Latest  int64 `json:"latest"`
	// Applied are the versions this run applied.
	Applied []int64 `json:"applied,omitempty"`
	// Error is why this place could not be migrated or read.
	Error string `json:"error,omitempty"`
}

// MigratePlaces brings the data plane of every place up to date: the
// shared place, the schema of every organization placed in one, and every
// configured database target (whose roles are checked first). The main
// set must be applied first (Migrate). A place that fails is reported
// with its error and the others are still migrated; the returned error
// names every place that failed. Safe to run from several processes at
// once (an advisory lock per database).
func MigratePlaces(ctx context.Context, ownerDSN string, targets []Target) ([]PlaceStatus, error) {
	return walkPlaces(ctx, ownerDSN, targets, true)
}

// PlacesStatus reads the data-plane version of every place without
// changing anything.
func PlacesStatus(ctx context.Context, ownerDSN string, targets []Target) ([]PlaceStatus, error) {
	return walkPlaces(ctx, ownerDSN, targets, false)
}

func walkPlaces(ctx context.Context, ownerDSN string, targets []Target, migrate bool) ([]PlaceStatus, error) {
	main, err := openSQL(ownerDSN, "migrate")
	if err != nil {
		return nil, err
	}
	defer main.Close()
	conn, err := pgx.Connect(ctx, ownerDSN)
	if err != nil {
		return nil, fmt.Errorf("migrate: connecting as the owner: %w", err)
	}
	defer conn.Close(ctx)

	schemaOrgs, unknown, err := placedOrgs(ctx, conn, newTargetSet(targets))
	if err != nil {
		return nil, err
	}
	if afterOrgsListed != nil {
		afterOrgsListed()
	}
	var out []PlaceStatus
	var errs []error
	record := func(st PlaceStatus, err error) {
		st.Latest = LatestDataVersion()
		if err != nil {
			st.Error = err.Error()
			errs = append(errs, fmt.Errorf("data plane of %s: %w", st.Place, err))
		}
		out = append(out, st)
	}

	// The main database: the shared place, then every tenant schema.
	mainPlaces := []Place{SharedPlace}
	for _, org := range schemaOrgs {
		mainPlaces = append(mainPlaces, PlaceOf(org, Placement{Kind: PlaceSchema}))
	}
	for _, p := range mainPlaces {
		st := PlaceStatus{Place: p.String()}
		if p.Org != uuid.Nil {
			st.Org = &p.Org
		}
		gone := false
		if migrate && p.Org != uuid.Nil {
			err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				// The organization's row stays locked until its schema is
				// made: a deletion waits, then drops the schema with it.
				err := tx.QueryRow(ctx, `SELECT true FROM organizations WHERE `+schemaPlaced+` FOR KEY SHARE`, p.Org).Scan(new(bool))
				if errors.Is(err, pgx.ErrNoRows) {
					gone = true // deleted or moved out since the list: no schema to make
					return nil
				}
				if err != nil {
					return err
				}
				return ensureSchema(ctx, tx, p.Org)
			})
		}
		if gone {
			continue
		}
		if err == nil && migrate {
			st.Applied, err = migrateData(ctx, main, p, mainAppRole)
		}
		if err == nil {
			st.Version, err = dataVersion(ctx, conn, p)
		}
		if (err != nil || st.Version == 0) && p.Org != uuid.Nil {
			// A schema that failed, or has no data plane, may belong to
			// an organization deleted (or moved out) since the list.
			if gone, gerr := schemaPlaceGone(ctx, conn, p.Org); gerr == nil && gone {
				err = nil
				continue
			}
		}
		record(st, err)
		err = nil
	}

	// The database targets, in name order.
	sorted := slices.Clone(targets)
	slices.SortFunc(sorted, func(a, b Target) int { return strings.Compare(a.Name, b.Name) })
	for _, t := range sorted {
		st, err := walkTarget(ctx, t, migrate)
		record(st, err)
	}
	for _, name := range unknown {
		record(PlaceStatus{Place: PlaceDatabase + ":" + name},
			errors.New("organizations are placed on it, but the configuration names no such database target"))
	}
	return out, errors.Join(errs...)
}

// walkTarget migrates (or reads) one database target's data plane.
func walkTarget(ctx context.Context, t Target, migrate bool) (PlaceStatus, error) {
	p := Place{Target: t.Name, Schema: "public"}
	st := PlaceStatus{Place: p.String()}
	if migrate {
		if err := CheckTarget(ctx, t); err != nil {
			return st, err
		}
		app, err := t.appRole()
		if err != nil {
			return st, err
		}
		db, err := openSQL(t.AdminDSN, "database target "+t.Name)
		if err != nil {
			return st, err
		}
		defer db.Close()
		if st.Applied, err = migrateData(ctx, db, p, app); err != nil {
			return st, err
		}
	}
	conn, err := connectTarget(ctx, t.Name, "admin", t.AdminDSN)
	if err != nil {
		return st, err
	}
	defer conn.Close(ctx)
	st.Version, err = dataVersion(ctx, conn, p)
	return st, err
}

// placedOrgs lists the organizations placed in a schema of their own, and
// the database targets organizations are placed on that targets lacks.
func placedOrgs(ctx context.Context, conn *pgx.Conn, targets targetSet) (schemaOrgs []uuid.UUID, unknown []string, err error) {
	// A move's other placement too (move.go): its destination schema is
	// migrated before the cut-over, its source's until the cleanup.
	rows, err := conn.Query(ctx, `SELECT id, p FROM (
			SELECT id, created_at, placement AS p FROM organizations
			UNION SELECT id, created_at, move_to FROM organizations WHERE move_to IS NOT NULL
			UNION SELECT id, created_at, move_from FROM organizations WHERE move_from IS NOT NULL) x
		WHERE p <> 'shared' ORDER BY created_at, id, p`)
	if err != nil {
		return nil, nil, fmt.Errorf("migrate: listing placed organizations: %w", err)
	}
	var id uuid.UUID
	var placement string
	seen := map[string]bool{}
	_, err = pgx.ForEachRow(rows, []any{&id, &placement}, func() error {
		p, err := ParsePlacement(placement)
		if err != nil {
			return err
		}
		switch {
		case p.Kind == PlaceSchema:
			schemaOrgs = append(schemaOrgs, id)
		case p.Kind == PlaceDatabase && !seen[p.Target]:
			seen[p.Target] = true
			if _, ok := targets[p.Target]; !ok {
				unknown = append(unknown, p.Target)
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("migrate: listing placed organizations: %w", err)
	}
	return schemaOrgs, unknown, nil
}

// schemaPlaced selects organization $1 if it has a place in a schema of
// its own: its placement or a move's other end is 'schema'.
const schemaPlaced = `id = $1 AND 'schema' IN (placement, move_to, move_from)`

// schemaPlaceGone reports whether org has no place in a schema of its own
// any more: deleted, or moved out.
func schemaPlaceGone(ctx context.Context, q queryRower, org uuid.UUID) (bool, error) {
	var gone bool
	err := q.QueryRow(ctx, `SELECT NOT EXISTS (SELECT FROM organizations WHERE `+schemaPlaced+`)`, org).Scan(&gone)
	return gone, err
}
