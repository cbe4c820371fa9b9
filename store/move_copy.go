package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// The copy of a move (move.go): an organization's rows of every data
// table from one place to another, as the owner role of each, inside the
// organization's tenant context in both (so that the policies check the
// copy as they check the gateway's statements).

// placeDB is one place reached as its database's owner.
type placeDB struct {
	place Place
	db    beginner
	close func()
}

// openPlace reaches org's place under placement p: the main pool, or a
// connection to the database target's owner role.
func (a *Admin) openPlace(ctx context.Context, org uuid.UUID, p Placement) (placeDB, error) {
	place := PlaceOf(org, p)
	if p.Kind != PlaceDatabase {
		return placeDB{place: place, db: a.pool, close: func() {}}, nil
	}
	t, err := a.targets.get(p.Target)
	if err != nil {
		return placeDB{}, err
	}
	conn, err := connectTarget(ctx, t.Name, "admin", t.AdminDSN)
	if err != nil {
		return placeDB{}, err
	}
	return placeDB{place: place, db: conn, close: func() { conn.Close(context.Background()) }}, nil
}

// moveSettings make a row's text the same in every place: to_jsonb
// writes timestamps in the session's time zone.
const moveSettings = `SELECT set_config('timezone', 'UTC', true), set_config('bytea_output', 'hex', true), set_config('extra_float_digits', '1', true)`

// tx runs fn in org's tenant context in the place, with moveSettings.
func (d placeDB) tx(ctx context.Context, org uuid.UUID, fn func(pgx.Tx) error) error {
	return inTenant(ctx, d.db, org, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, moveSettings); err != nil {
			return err
		}
		return fn(tx)
	})
}

// count is how many rows of org the place's data tables hold.
func (d placeDB) count(ctx context.Context, org uuid.UUID) (int64, error) {
	var total int64
	err := d.tx(ctx, org, func(tx pgx.Tx) error {
		var ok *string
		if err := tx.QueryRow(ctx, `SELECT to_regclass($1)::text`, d.place.table("prompts")).Scan(&ok); err != nil || ok == nil {
			return err // a schema not made yet holds nothing
		}
		for _, t := range dataTables {
			var n int64
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+d.place.table(t)+` WHERE organization_id = $1`, org).Scan(&n); err != nil {
				return err
			}
			total += n
		}
		return nil
	})
	return total, err
}

// deleteAll deletes org's rows from every data table of the place.
func (d placeDB) deleteAll(ctx context.Context, org uuid.UUID) error {
	return d.tx(ctx, org, func(tx pgx.Tx) error {
		for _, t := range dataTables {
			if _, err := tx.Exec(ctx, `DELETE FROM `+d.place.table(t)+` WHERE organization_id = $1`, org); err != nil {
				return fmt.Errorf("deleting %s: %w", t, err)
			}
		}
		return nil
	})
}

// columns are a table's insertable columns in the place, in order.
func (d placeDB) columns(ctx context.Context, org uuid.UUID, table string) ([]string, error) {
	var cols []string
	err := d.tx(ctx, org, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT attname::text FROM pg_attribute WHERE attrelid = to_regclass($1)
			AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum`, d.place.table(table))
		if err != nil {
			return err
		}
		cols, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err == nil && len(cols) == 0 {
		err = fmt.Errorf("%s has no table %s (not migrated?)", d.place.String(), table)
	}
	return cols, err
}

// sumSQL is the count and checksum of the rows that from selects (a
// subquery of the copied columns): the sum of a 64-bit hash of each row's
// jsonb text, whose keys jsonb orders the same in every place.
const sumSQL = `SELECT count(*), coalesce(sum(hashtextextended(to_jsonb(r)::text, 0)), 0)::text FROM (%s) r`

// dailyTables are the data tables a place derives from its hourly
// rollups (usage_reroll_org), which a move sums again rather than copies.
var dailyTables = map[string]bool{"usage_daily": true, "usage_daily_user": true, "usage_monthly_user": true}

// copyOrg copies org's rows of every data table from src to dst (which
// must not be written for org meanwhile: the move holds its records),
// verifies them, and returns each table's count and checksum.
func (a *Admin) copyOrg(ctx context.Context, org uuid.UUID, from, to Placement, batch int) (map[string]TableSum, error) {
	src, err := a.openPlace(ctx, org, from)
	if err != nil {
		return nil, err
	}
	defer src.close()
	dst, err := a.openPlace(ctx, org, to)
	if err != nil {
		return nil, err
	}
	defer dst.close()
	cols := map[string][]string{}
	for _, t := range dataTables {
		sc, err := src.columns(ctx, org, t)
		if err != nil {
			return nil, err
		}
		dc, err := dst.columns(ctx, org, t)
		if err != nil {
			return nil, err
		}
		for _, c := range sc {
			if !slices.Contains(dc, c) {
				return nil, fmt.Errorf("%s.%s has no column %s that %s has: run `bulkhead migrate` first", dst.place.String(), t, c, src.place.String())
			}
		}
		cols[t] = sc
	}
	if err := copyPrompts(ctx, org, src, dst, cols["prompts"], batch); err != nil {
		return nil, err
	}
	// The rollups after the prompts: the source's hourly ones replace what
	// the destination's trigger counted from the copied rows; the daily
	// ones are summed again from them up to the destination's own
	// daily_through (data-plane 00004), which may differ from the
	// source's.
	for _, t := range dataTables[1:] {
		if dailyTables[t] {
			continue
		}
		if err := copyWhole(ctx, org, src, dst, t, cols[t]); err != nil {
			return nil, err
		}
	}
	err = dst.tx(ctx, org, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `SELECT `+dst.place.table("usage_reroll_org")+`($1)`, org)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("summing the daily rollups in %s: %w", dst.place.String(), err)
	}
	sums := map[string]TableSum{}
	for _, t := range dataTables {
		if dailyTables[t] {
			continue // derived from the hourly ones, verified
		}
		q := fmt.Sprintf(sumSQL, `SELECT `+quoteCols(cols[t])+` FROM %s WHERE organization_id = $1`)
		s, err := src.sum(ctx, org, fmt.Sprintf(q, src.place.table(t)))
		if err != nil {
			return nil, err
		}
		d, err := dst.sum(ctx, org, fmt.Sprintf(q, dst.place.table(t)))
		if err != nil {
			return nil, err
		}
		if s != d {
			return nil, fmt.Errorf("verifying %s: the source has %d rows (checksum %s), the destination %d (checksum %s)", t, s.Rows, s.Checksum, d.Rows, d.Checksum)
		}
		sums[t] = s
	}
	return sums, nil
}

func (d placeDB) sum(ctx context.Context, org uuid.UUID, q string, args ...any) (TableSum, error) {
	var s TableSum
	err := d.tx(ctx, org, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, q, append([]any{org}, args...)...).Scan(&s.Rows, &s.Checksum)
	})
	return s, err
}

// copyPrompts copies org's prompts in batches in (created_at, id) order;
// each batch is verified in the destination's transaction that inserts
// it (the count and checksum of the same key range), so that a batch is
// committed whole and right or not at all.
func copyPrompts(ctx context.Context, org uuid.UUID, src, dst placeDB, cols []string, batch int) error {
	list := quoteCols(cols)
	sel := `SELECT r.created_at, r.id, to_jsonb(r)::text FROM (SELECT ` + list + ` FROM ` + src.place.table("prompts") + `
		WHERE organization_id = $1 AND (created_at, id) > ($2, $3) ORDER BY created_at, id LIMIT $4) r`
	rangeSQL := func(p Place) string {
		return fmt.Sprintf(sumSQL, `SELECT `+list+` FROM `+p.table("prompts")+
			` WHERE organization_id = $1 AND (created_at, id) >= ($2, $3) AND (created_at, id) <= ($4, $5)`)
	}
	ins := `INSERT INTO ` + dst.place.table("prompts") + ` (` + list + `) SELECT ` + list +
		` FROM jsonb_populate_recordset(NULL::` + dst.place.table("prompts") + `, $1::jsonb) ON CONFLICT DO NOTHING`
	at := pgtype.Timestamptz{InfinityModifier: pgtype.NegativeInfinity, Valid: true}
	var atID uuid.UUID
	for {
		var texts []string
		var first, last time.Time
		var firstID, lastID uuid.UUID
		var want TableSum
		err := src.tx(ctx, org, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, sel, org, at, atID, batch)
			if err != nil {
				return err
			}
			var t time.Time
			var id uuid.UUID
			var text string
			_, err = pgx.ForEachRow(rows, []any{&t, &id, &text}, func() error {
				if len(texts) == 0 {
					first, firstID = t, id
				}
				last, lastID = t, id
				texts = append(texts, text)
				return nil
			})
			if err != nil || len(texts) == 0 {
				return err
			}
			return tx.QueryRow(ctx, rangeSQL(src.place), org, first, firstID, last, lastID).Scan(&want.Rows, &want.Checksum)
		})
		if err != nil {
			return fmt.Errorf("reading prompts from %s: %w", src.place.String(), err)
		}
		if len(texts) == 0 {
			return nil
		}
		err = dst.tx(ctx, org, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, ins, "["+strings.Join(texts, ",")+"]"); err != nil {
				return err
			}
			var got TableSum
			if err := tx.QueryRow(ctx, rangeSQL(dst.place), org, first, firstID, last, lastID).Scan(&got.Rows, &got.Checksum); err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("a batch of %d rows does not verify: the destination holds %d (checksum %s, want %s)", want.Rows, got.Rows, got.Checksum, want.Checksum)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("writing prompts to %s: %w", dst.place.String(), err)
		}
		at, atID = pgtype.Timestamptz{Time: last, Valid: true}, lastID
	}
}

// copyWhole replaces org's rows of table in dst by src's.
func copyWhole(ctx context.Context, org uuid.UUID, src, dst placeDB, table string, cols []string) error {
	list := quoteCols(cols)
	var doc string
	err := src.tx(ctx, org, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT coalesce(jsonb_agg(to_jsonb(r)), '[]')::text FROM (SELECT `+list+` FROM `+
			src.place.table(table)+` WHERE organization_id = $1) r`, org).Scan(&doc)
	})
	if err != nil {
		return fmt.Errorf("reading %s from %s: %w", table, src.place.String(), err)
	}
	err = dst.tx(ctx, org, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM `+dst.place.table(table)+` WHERE organization_id = $1`, org); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO `+dst.place.table(table)+` (`+list+`) SELECT `+list+
			` FROM jsonb_populate_recordset(NULL::`+dst.place.table(table)+`, $1::jsonb)`, doc)
		return err
	})
	if err != nil {
		return fmt.Errorf("writing %s to %s: %w", table, dst.place.String(), err)
	}
	return nil
}
