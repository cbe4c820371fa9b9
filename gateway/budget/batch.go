package budget

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/gateway/internal/batch"
	"github.com/bulkheadhq/bulkhead/store"
)

// BatchSource reads many organizations' budget lists in one round trip
// (store.BudgetsForOrgs). A Source that is one too gets the first reads
// of concurrent requests' organizations batched (gateway/internal/batch):
// with thousands of organizations starting at once, one transaction reads
// many of them instead of one each.
type BatchSource interface {
	BudgetsForOrgs(ctx context.Context, orgs []uuid.UUID) (map[uuid.UUID][]store.Budget, error)
}

var _ BatchSource = (*store.Store)(nil)

// newBatch returns the batcher of first reads when src is a BatchSource,
// else nil; each batch is bounded by timeout.
func newBatch(src Source, timeout time.Duration) *batch.Batcher[uuid.UUID, []store.Budget] {
	bs, ok := src.(BatchSource)
	if !ok {
		return nil
	}
	return batch.New(func(orgs []uuid.UUID) (map[uuid.UUID][]store.Budget, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return bs.BudgetsForOrgs(ctx, orgs)
	}, 0, 0)
}

// readBudgets reads org's budget list: in the next batch when the Source
// batches, else on its own. ctx bounds the wait.
func (e *Enforcer) readBudgets(ctx context.Context, org uuid.UUID) ([]store.Budget, error) {
	if e.batch == nil {
		return e.o.Source.BudgetsFor(ctx, org)
	}
	return e.batch.Do(ctx, org)
}

// Prefetch starts reading org's budget list in the background unless a
// fresh one is cached, so that a request can overlap the read with its
// other first-touch round trips before Reserve needs it. It does not
// wait; concurrent reads of one organization are one (Reserve's too).
func (e *Enforcer) Prefetch(org uuid.UUID) {
	now := time.Now()
	e.mu.Lock()
	c, ok := e.lists[org]
	e.mu.Unlock()
	if ok && now.Before(c.expires) {
		return
	}
	go e.budgetsFor(context.Background(), org) //nolint:errcheck // Reserve reads again and reports
}
