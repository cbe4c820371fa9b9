package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
)

// Retention is how long an organization's request log is kept, in whole
// days: Forever, or 1 day and more. An organization's may also be unset
// (nil *Retention): it then takes the installation's default.
type Retention int

// Forever keeps rows until the organization is deleted.
const Forever Retention = 0

// ParseRetention reads "30d" (days), "forever", or "" (forever).
func ParseRetention(s string) (Retention, error) {
	switch s = strings.TrimSpace(s); s {
	case "", "forever":
		return Forever, nil
	}
	days, ok := strings.CutSuffix(s, "d")
	n, err := strconv.Atoi(days)
	if !ok || err != nil || n < 1 || n > 36500 {
		return 0, fmt.Errorf("retention %q: want a number of days like 30d (1 to 36500), or forever", s)
	}
	return Retention(n), nil
}

func (r Retention) String() string {
	if r == Forever {
		return "forever"
	}
	return strconv.Itoa(int(r)) + "d"
}

// RetentionResult is what one retention run removed.
type RetentionResult struct {
	PartitionsDropped int   `json:"partitions_dropped"`
	RowsDeleted       int64 `json:"rows_deleted"`
}

// retentionBatch bounds the rows one step deletes (one transaction).
const retentionBatch = 5000

// ApplyRetention removes the request log's rows past their
// organization's retention (see migration 00010): whole day partitions
// where every row is due, then the rest in steps of at most 5,000 rows,
// each its own transaction, until nothing due is left or ctx ends. It runs
// as the app role through prompts_apply_retention, which reads the
// retentions from the database (never from the caller) and writes the
// audit rows.
func (s *Store) ApplyRetention(ctx context.Context) (RetentionResult, error) {
	return applyRetention(ctx, s.pool)
}

type queryRower interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func applyRetention(ctx context.Context, db queryRower) (RetentionResult, error) {
	var total RetentionResult
	for {
		var dropped int
		var deleted int64
		var done bool
		if err := db.QueryRow(ctx, `SELECT * FROM prompts_apply_retention($1)`, retentionBatch).Scan(&dropped, &deleted, &done); err != nil {
			return total, fmt.Errorf("retention: %w", classify(err))
		}
		total.PartitionsDropped += dropped
		total.RowsDeleted += deleted
		if done {
			n, err := applyPlacedRetention(ctx, db)
			total.RowsDeleted += n
			return total, err
		}
		select { // let the writer and the read API in between steps
		case <-ctx.Done():
			return total, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// applyPlacedRetention is applyRetention's loop for the organizations
// placed in a schema (migration 00016); before 00016 it does nothing.
func applyPlacedRetention(ctx context.Context, db queryRower) (int64, error) {
	var total int64
	for {
		var deleted int64
		var done bool
		err := db.QueryRow(ctx, `SELECT * FROM prompts_apply_placed_retention($1)`, retentionBatch).Scan(&deleted, &done)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42883" { // undefined_function: before 00016
			return total, nil
		}
		if err != nil {
			return total, fmt.Errorf("retention: %w", classify(err))
		}
		total += deleted
		if done {
			return total, nil
		}
		select {
		case <-ctx.Done():
			return total, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// ApplyRetention is Store.ApplyRetention as the owner: bulkhead retention
// run.
//
// It also applies the retention of the organizations placed on database
// targets, which hold no organizations table for the gateway's function
// to read (applyTargetRetention).
func (a *Admin) ApplyRetention(ctx context.Context) (RetentionResult, error) {
	res, err := applyRetention(ctx, a.pool)
	if err != nil {
		return res, err
	}
	n, err := a.applyTargetRetention(ctx)
	res.RowsDeleted += n
	return res, err
}

// SetDefaultRetention makes r the installation's default retention, with
// an audit row when it changes. It reports whether it changed.
func (a *Admin) SetDefaultRetention(ctx context.Context, r Retention) (bool, error) {
	var changed bool
	err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO settings (name, value) VALUES ('retention_days', $1)
			ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = now()
			WHERE settings.value IS DISTINCT FROM excluded.value`, strconv.Itoa(int(r)))
		if err != nil {
			return err
		}
		if changed = tag.RowsAffected() > 0; !changed {
			return nil
		}
		return audit(ctx, tx, uuid.Nil, a.actor, "retention.default", "prompts", map[string]any{"retention": r.String()})
	})
	if err != nil {
		return false, fmt.Errorf("setting the default retention: %w", classify(err))
	}
	return changed, nil
}

// RunRetention applies retention (ApplyRetention) every interval, the
// first time after a random fraction of it, so that replicas started
// together spread their runs (concurrent runs take turns in PostgreSQL
// anyway), until ctx ends; it then returns nil. A failed run is logged and
// tried again at the next interval.
func (s *Store) RunRetention(ctx context.Context, interval time.Duration, log *zap.Logger) error {
	t := time.NewTimer(time.Duration(rand.Int64N(int64(interval)/4 + 1)))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		start := time.Now()
		res, err := s.ApplyRetention(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			log.Warn("retention: run failed; trying again later", zap.Error(err), zap.Duration("in", interval))
		case res != RetentionResult{}:
			log.Info("retention: expired request-log rows removed", zap.Int("partitions_dropped", res.PartitionsDropped),
				zap.Int64("rows_deleted", res.RowsDeleted), zap.Duration("took", time.Since(start)))
		}
		t.Reset(interval)
	}
}
