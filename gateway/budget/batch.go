package budget

import (
	"context"

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

// readBudgets reads org's budget list: in the next batch when the Source
// batches, else on its own. ctx bounds the wait; each batch is bounded by
// Options.Timeout.
func (e *Enforcer) readBudgets(ctx context.Context, org uuid.UUID) ([]store.Budget, error) {
	bs, ok := e.o.Source.(BatchSource)
	if !ok {
		return e.o.Source.BudgetsFor(ctx, org)
	}
	e.batchOnce.Do(func() {
		e.batch = batch.New(func(orgs []uuid.UUID) (map[uuid.UUID][]store.Budget, error) {
			ctx, cancel := context.WithTimeout(context.Background(), e.o.Timeout)
			defer cancel()
			return bs.BudgetsForOrgs(ctx, orgs)
		}, 0, 0)
	})
	return e.batch.Do(ctx, org)
}
