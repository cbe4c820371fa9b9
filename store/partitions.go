package store

import (
	"context"
	"errors"
	"time"

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
func (s *Store) CreatePartitions(ctx context.Context, daysAhead int) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT prompts_create_partitions($1)`, daysAhead).Scan(&n)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42883" { // undefined_function: before 00009
		return 0, nil
	}
	return n, err
}

// maintainPartitions runs CreatePartitions when it is due.
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
}
