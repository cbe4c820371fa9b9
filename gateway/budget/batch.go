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
