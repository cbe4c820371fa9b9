package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
)

// The request log's day partitions (migration 00009) are created this
// many days ahead, by the writer at its start and then at most every
// partitionInterval, before it writes a batch. A row no partition covers
// still lands, in the default partition, and moves to its day's partition
// when that is created.
const (
	partitionsAhead   = 14
	partitionInterval = time.Hour
	partitionRetry    = time.Minute // after a failure
)

// CreatePartitions creates the request log's missing day partitions from
// yesterday to daysAhead days ahead (at most 60) and returns how many it
// created. It runs prompts_create_partitions, which the app role may
// execute and which runs as the owner; concurrent callers take turns. On a
// schema before migration 00009 it does nothing.
//
// It does the same in every other place (placement.go): each tenant
// schema of the main database, and each database target; a target that
// cannot be reached is reported in the error, the other places are done
// all the same.
func (s *Store) CreatePartitions(ctx context.Context, daysAhead int) (int, error) {
	return s.callEveryPlace(ctx, "prompts_create_partitions($1)", daysAhead)
}

// RollDays sums the days that are over (for an hour, UTC) and not yet in
// the daily rollups into them, in every place (usage_roll_days, data-plane
// migration 00004), and returns how many days it rolled, summed over the
// places. Before that migration it does nothing.
func (s *Store) RollDays(ctx context.Context) (int, error) {
	return s.callEveryPlace(ctx, "usage_roll_days()")
}

// callEveryPlace runs fn, a data-plane function returning a count that
// the app role may execute, in the shared place and then in every other
// place (placement.go): each tenant schema of the main database and
// each database target. It returns the sum of the counts. A target that
// cannot be reached is reported in the error, the other places are done
// all the same; in the shared place, a function not created yet (an
// older schema) counts 0.
func (s *Store) callEveryPlace(ctx context.Context, fn string, args ...any) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT public.`+fn, args...).Scan(&n)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42883" { // undefined_function: an older schema
		return 0, nil
	}
	if err != nil {
		return n, err
	}
	m, err := s.callPlaced(ctx, fn, args...)
	return n + m, err
}

// tenantSchemasSQL lists the tenant schemas whose partitions the app role
// maintains: named as SchemaName names them, owned by the owner of the
// shared place's function (a schema someone else made is never entered),
// and migrated (the function there, the app role's USAGE granted: a
// schema being created is skipped until it is).
const tenantSchemasSQL = `SELECT n.nspname::text FROM pg_namespace n
	WHERE n.nspname ~ '^t_[0-9a-f]{32}$'
	  AND n.nspowner = (SELECT p.proowner FROM pg_proc p WHERE p.oid = 'public.prompts_create_partitions(integer)'::regprocedure)
	  AND has_schema_privilege(n.oid, 'USAGE')
	  AND EXISTS (SELECT FROM pg_proc f WHERE f.pronamespace = n.oid AND f.proname = 'prompts_create_partitions')
	ORDER BY 1`

func (s *Store) callPlaced(ctx context.Context, fn string, args ...any) (int, error) {
	rows, err := s.pool.Query(ctx, tenantSchemasSQL)
	if err != nil {
		return 0, err
	}
	schemas, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, err
	}
	total := 0
	var errs []error
	for _, schema := range schemas {
		if !tenantSchema.MatchString(schema) {
			continue
		}
		var n int
		err := s.pool.QueryRow(ctx, `SELECT `+schema+`.`+fn, args...).Scan(&n)
		if err != nil && !errors.As(err, new(*pgconn.PgError)) {
			return total, err // the main database itself
		}
		if err != nil && !placeGone(err) { // gone: dropped since the listing
			errs = append(errs, fmt.Errorf("schema %s: %w", schema, err))
		}
		total += n
	}
	for _, name := range s.router.targetNames() {
		pool, err := s.poolFor(ctx, Place{Target: name, Schema: "public"})
		var n int
		if err == nil {
			err = pool.QueryRow(ctx, `SELECT public.`+fn, args...).Scan(&n)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("database target %s: %w", name, err))
		}
		total += n
	}
	return total, errors.Join(errs...)
}

// maintainPartitions runs CreatePartitions and RollDays when they are
// due.
func (w *Writer) maintainPartitions(ctx context.Context) {
	rs := &w.rs
	if time.Now().Before(rs.partitionsDue) || rs.down || rs.replaying {
		return // not due, or PostgreSQL is not taking rows: after it is back
	}
	cctx, cancel := context.WithTimeout(ctx, w.opts.WriteTimeout)
	defer cancel()
	n, err := w.st.CreatePartitions(cctx, partitionsAhead)
	if err != nil {
		rs.partitionsDue = time.Now().Add(partitionRetry)
		w.log.Warn("request log: creating the day partitions ahead failed; rows beyond them go to the default partition", zap.Error(err))
		return
	}
	rs.partitionsDue = time.Now().Add(partitionInterval)
	if n > 0 {
		w.log.Info("request log: day partitions created", zap.Int("created", n), zap.Int("days_ahead", partitionsAhead))
	}
	// The days over into the daily rollups, on the same hourly round: a
	// day not rolled yet is read from the hourly ones meanwhile. A roll
	// that could not take its lock in time is tried on the next round.
	if d, err := w.st.RollDays(cctx); err != nil {
		w.log.Warn("request log: rolling the days over into the daily rollups failed; reports read them from the hourly ones until the next try", zap.Error(err))
	} else if d > 0 {
		w.log.Info("request log: days rolled into the daily rollups", zap.Int("days", d))
	}
}
