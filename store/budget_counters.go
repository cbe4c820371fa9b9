package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Budget counters in PostgreSQL (migration 00020): the gateway's shared
// spend counters (gateway/budget) when Redis is not configured or not
// reachable. Every call runs as the app role in the organization's
// tenant context, so RLS confines it to the organization's own counters.

// BudgetLease is one budget's part of LeaseBudgets: its limit, the lowest
// bucket still in its window, the bucket to add to, how long the counter
// outlives this lease, the most to lease beyond the amount, and the lease
// the caller gives back first (its bucket, amount and generation).
type BudgetLease struct {
	ID                      uuid.UUID
	Limit, Low, Bucket      int64
	TTL                     time.Duration
	Most                    int64
	BackBucket, Back, BackG int64
}

// LeaseBudgets reserves amount from the counters of org's budgets in ps,
// all or nothing, and leases a chunk beyond it (budget_counter_lease). The
// reply is that of gateway/budget's Redis lease script: {1, spent, lease,
// generation per budget...}, {0, spent per budget..., refusing index}, or
// {-1, missing index...} (nothing changed: the counters must be built
// first, InitBudgetCounter).
func (s *Store) LeaseBudgets(ctx context.Context, org uuid.UUID, amount, divisor int64, ps []BudgetLease) ([]int64, error) {
	n := len(ps)
	ids := make([]uuid.UUID, n)
	cols := make([][]int64, 8)
	for i := range cols {
		cols[i] = make([]int64, n)
	}
	for i, p := range ps {
		ids[i] = p.ID
		cols[0][i], cols[1][i], cols[2][i], cols[3][i] = p.Limit, p.Low, p.Bucket, p.TTL.Milliseconds()
		cols[4][i], cols[5][i], cols[6][i], cols[7][i] = p.Most, p.BackBucket, p.Back, p.BackG
	}
	var out []int64
	err := s.InTenant(ctx, org, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT budget_counter_lease($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
			org, amount, divisor, ids, cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], cols[7]).Scan(&out)
	})
	if err != nil {
		return nil, fmt.Errorf("leasing from budget counters: %w", err)
	}
	return out, nil
}

// AdjustBudgetCounter adds amount (signed: a lease given back, a cost
// beyond a reservation) to bucket of budget's counter if the counter is
// of generation gen and bucket is still live (at least low), and reports
// whether it did.
func (s *Store) AdjustBudgetCounter(ctx context.Context, org, budget uuid.UUID, gen, bucket, low, amount int64) (bool, error) {
	if bucket < low {
		return false, nil
	}
	var n int64
	err := s.InTenant(ctx, org, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE budget_counters SET spends = (SELECT array_agg(CASE WHEN u.b = $4 THEN u.sp + $5 ELSE u.sp END ORDER BY u.o)
				FROM unnest(buckets, spends) WITH ORDINALITY AS u (b, sp, o))
			WHERE organization_id = $1 AND budget_id = $2 AND generation = $3 AND $4 = ANY (buckets) AND expires_at > now()`,
			org, budget, gen, bucket, amount)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return false, fmt.Errorf("adjusting a budget counter: %w", err)
	}
	return n == 1, nil
}

// InitBudgetCounter creates budget's counter with spent in bucket under
// generation gen, living ttl, unless a live one exists (of callers
// building it at once, the first one's stands). A counter past its expiry
// is replaced.
func (s *Store) InitBudgetCounter(ctx context.Context, org, budget uuid.UUID, gen, bucket, spent int64, ttl time.Duration) error {
	err := s.InTenant(ctx, org, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO budget_counters (organization_id, budget_id, generation, buckets, spends, expires_at)
			VALUES ($1, $2, $3, ARRAY[$4::bigint], ARRAY[$5::bigint], now() + $6 * interval '1 millisecond')
			ON CONFLICT (organization_id, budget_id) DO UPDATE SET generation = excluded.generation, buckets = excluded.buckets,
				spends = excluded.spends, expires_at = excluded.expires_at
			WHERE budget_counters.expires_at <= now()`, org, budget, gen, bucket, spent, ttl.Milliseconds())
		return err
	})
	if err != nil {
		return fmt.Errorf("building a budget counter: %w", err)
	}
	return nil
}

// CloseBudgetCounter deletes budget's counter if it is of generation gen,
// and reports whether it did.
func (s *Store) CloseBudgetCounter(ctx context.Context, org, budget uuid.UUID, gen int64) (bool, error) {
	var n int64
	err := s.InTenant(ctx, org, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM budget_counters WHERE organization_id = $1 AND budget_id = $2 AND generation = $3`, org, budget, gen)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return false, fmt.Errorf("closing a budget counter: %w", err)
	}
	return n == 1, nil
}
