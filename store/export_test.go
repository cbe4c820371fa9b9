package store

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/store/seal"
)

// AcquireForTest hands a test one of the pool's own connections, so that a
// test can prove what a reused connection carries.
func AcquireForTest(ctx context.Context, s *Store) (*pgxpool.Conn, error) { return s.pool.Acquire(ctx) }

// ListPromptsWithoutOrgFilterForTest is ListPrompts with its SQL
// organization filter removed, to prove that RLS alone still confines it.
func ListPromptsWithoutOrgFilterForTest(ctx context.Context, s *Store, org uuid.UUID, f PromptFilter) ([]Prompt, error) {
	return s.listPrompts(ctx, org, f, false)
}

// StartedForTest reports whether Run (or Close's own flush) has begun, so
// a test can close a writer whose Run is certainly running.
func StartedForTest(w *Writer) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.started
}

// RowIDForTest is rowID: the id of a row created at t with random bits low.
func RowIDForTest(t time.Time, low uint64) uuid.UUID { return rowID(t, low) }

// SettleRowIDForTest is settleRowID.
func SettleRowIDForTest(r *LogRecord) { settleRowID(r) }

// IdleConnsForTest acquires every connection of s's pool, which must all
// be idle, so that a test can ask each what it carries. The caller
// releases them.
func IdleConnsForTest(ctx context.Context, s *Store) ([]*pgxpool.Conn, int32) {
	return s.pool.AcquireAllIdle(ctx), s.pool.Stat().TotalConns()
}

// AdminIdleConnsForTest is IdleConnsForTest for an Admin's pool.
func AdminIdleConnsForTest(ctx context.Context, a *Admin) ([]*pgxpool.Conn, int32) {
	return a.pool.AcquireAllIdle(ctx), a.pool.Stat().TotalConns()
}

// MigrateToForTest is Migrate up to version, for upgrade tests.
func MigrateToForTest(ctx context.Context, ownerDSN string, version int64) ([]int64, error) {
	return migrateTo(ctx, ownerDSN, version)
}

// ForgetSealKeyForTest drops org from s's data-key cache.
func ForgetSealKeyForTest(s *Store, org uuid.UUID) { s.keys.forget(org) }

// RewrapAllForTest is RewrapAll for some organizations only, and without
// recording the KEK check (the test database is shared).
func (a *Admin) RewrapAllForTest(ctx context.Context, kek seal.KEK, orgs []uuid.UUID) (int, error) {
	return a.rewrap(ctx, kek, orgs)
}

// UsageQueryForTest is usageQuery, for EXPLAIN.
func UsageQueryForTest(groupBy string) string { q, _ := usageQuery(groupBy); return q }

// UsageArgsForTest is usageArgs.
func UsageArgsForTest(org uuid.UUID, since, until time.Time) []any {
	return usageArgs(org, since, until)
}

// ReportArgsForTest is reportArgs in the shared place.
func ReportArgsForTest(ctx context.Context, tx pgx.Tx, org uuid.UUID, since, until time.Time, groupBy string) ([]any, error) {
	return reportArgs(ctx, tx, Place{Schema: "public"}, org, since, until, groupBy)
}

// InTenantReportForTest is Usage's transaction (in the shared place's
// tenants' place: the queries name bare tables).
func InTenantReportForTest(ctx context.Context, s *Store, org uuid.UUID, fn func(pgx.Tx) error) error {
	return s.inPlaceRead(ctx, org, reportSettings, func(tx pgx.Tx, _ Place) error { return fn(tx) })
}

// NewConnsForTest is the number of connections s's pool has opened.
func NewConnsForTest(s *Store) int64 { return s.pool.Stat().NewConnsCount() }

// SeriesQueryForTest is UsageSeries' query, for its EXPLAIN.
func SeriesQueryForTest(by string) string { q, _ := seriesQuery(by); return q }

// EnsureSchemaForTest is ensureSchema, in its own transaction.
func EnsureSchemaForTest(ctx context.Context, a *Admin, org uuid.UUID) error {
	return pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error { return ensureSchema(ctx, tx, org) })
}

// IsolationPredicateForTest is the policy predicate of place p.
func IsolationPredicateForTest(p Place) string { return isolationPredicate(p) }

// LatencyBucketForTest is the latency bucket of ms, computed in Go from
// latencyBounds (as width_bucket does), and the figure a series reports
// for it.
func LatencyBucketForTest(ms int64) int64 { return latencyBucketBound(LatencyBucketIndexForTest(ms)) }

// LatencyBucketIndexForTest is the index of ms's latency bucket, computed
// in Go from latencyBounds.
func LatencyBucketIndexForTest(ms int64) int {
	i := 0
	for i < len(latencyBounds) && latencyBounds[i] <= max(ms, 0) {
		i++
	}
	return i
}

// SetPlacementTTLForTest shortens how long s reuses a cached placement.
func SetPlacementTTLForTest(s *Store, d time.Duration) {
	s.router.mu.Lock()
	s.router.ttl = d
	s.router.mu.Unlock()
}

// StopMoveAfterForTest makes a move fail (as if its process died) once
// step is recorded.
func StopMoveAfterForTest(o *MoveOptions, step string) { o.stopAfter = step }

// ErrMoveStoppedForTest is what a move stopped by StopMoveAfterForTest returns.
var ErrMoveStoppedForTest = errMoveStopped

// SetAfterOrgsListedForTest makes UsageByOrg call fn between its list of
// organizations and its reads of their places (nil: nothing).
func SetAfterOrgsListedForTest(fn func()) { afterOrgsListed = fn }

// SetAfterDeletionReadForTest makes DeleteOrg call fn after it has read
// the organization's placement, before it deletes anything (nil: nothing).
func SetAfterDeletionReadForTest(fn func()) { afterDeletionRead = fn }
