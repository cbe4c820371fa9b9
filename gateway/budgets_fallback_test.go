package gateway

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway/budget"
	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// unreachableCounters is PostgreSQL's budget counters, unreachable.
type unreachableCounters struct{}

var errUnreachable = errors.New("dial tcp: connection refused")

func (unreachableCounters) LeaseBudgets(context.Context, uuid.UUID, int64, int64, []store.BudgetLease) ([]int64, error) {
	return nil, errUnreachable
}

func (unreachableCounters) AdjustBudgetCounter(context.Context, uuid.UUID, uuid.UUID, int64, int64, int64, int64) (bool, error) {
	return false, errUnreachable
}

func (unreachableCounters) InitBudgetCounter(context.Context, uuid.UUID, uuid.UUID, int64, int64, int64, time.Duration) error {
	return errUnreachable
}

func (unreachableCounters) CloseBudgetCounter(context.Context, uuid.UUID, uuid.UUID, int64) (bool, error) {
	return false, errUnreachable
}

// admissionsBy reads bulkhead_budget_admissions_total{source} from reg.
func admissionsBy(t *testing.T, reg *prometheus.Registry, source string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "bulkhead_budget_admissions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "source" && l.GetValue() == source {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// Redis cut off mid-run (then back), or killed, under concurrent load
// on two replicas: requests go on, counted in PostgreSQL's counters while
// Redis is away (built from the request log), never a 500 or a 503; and
// the budget still holds: the request log's spend is at most the budget
// plus the bound lease.go states for each change of counter (the leases
// the replicas held against the old one, the reservations in flight and
// the rows not yet written), and close to the budget.
func TestBudgetRedisFallback(t *testing.T) {
	for _, fault := range []string{"cut and back", "killed"} {
		t.Run(fault, func(t *testing.T) { budgetRedisFallback(t, fault) })
	}
}

func budgetRedisFallback(t *testing.T, fault string) {
	h := newHarness(t, catalogConfig(config.ModelAccessAll))
	org, key, _ := h.tenant(1_000_000)
	model := pricedModel(t, h)
	limit := store.MicroUSD(3_000_000)
	if _, err := h.admin.SetBudget(context.Background(), store.Budget{OrgID: org, Limit: limit,
		Window: store.BudgetWindow{Kind: "day"}}); err != nil {
		t.Fatal(err)
	}
	srv := storetest.StartRedisServer(t)
	proxy := storetest.NewFaultProxy(t, srv.Addr)
	rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	prefix := "bulkhead:budget:test:" + uuid.NewString() // one for both replicas, as a fleet's
	var regs []*prometheus.Registry
	var replicas []*harness
	for range 2 {
		reg := prometheus.NewRegistry()
		regs = append(regs, reg)
		replicas = append(replicas, budgetReplicaWith(t, h, budget.Options{Redis: rdb, Counters: h.st, Metrics: reg,
			Prefix: prefix, RedisTimeout: 200 * time.Millisecond}))
	}
	const callers = 4
	var ok, refused atomic.Int32
	var phase sync.Once
	var back sync.Once
	var wg sync.WaitGroup
	for i := range callers {
		gw := replicas[i%2]
		wg.Go(func() {
			for {
				r := gw.do("POST", "/v1/chat/completions", budgetChat(model, "u"), "Authorization", "Bearer "+key)
				switch r.status {
				case 200:
					n := ok.Add(1)
					if n == 10 {
						phase.Do(func() {
							if fault == "killed" {
								srv.Kill()
							} else {
								proxy.Cut("refuse")
							}
						})
					}
					if n == 40 && fault == "cut and back" {
						back.Do(proxy.Restore)
					}
				case 429:
					if !strings.Contains(string(r.body), `"code":"insufficient_quota"`) {
						t.Errorf("refusal body %s", r.body)
					}
					refused.Add(1)
					return
				default:
					t.Errorf("after %d answers: %d %s", ok.Load(), r.status, r.body)
					return
				}
			}
		})
	}
	wg.Wait()
	spent := spentInLog(t, org, int(ok.Load()))
	var byPG, byRedis float64
	for _, reg := range regs {
		byPG += admissionsBy(t, reg, "postgres")
		byRedis += admissionsBy(t, reg, "redis")
	}
	t.Logf("%d answered, %d refused, spent $%s; %v admissions by Redis, %v by PostgreSQL", ok.Load(), refused.Load(), spent, byRedis, byPG)
	if byPG == 0 {
		t.Error("no admission by PostgreSQL's counters while Redis was away")
	}
	// lease.go's bound: per change of counter, each replica's lease (at
	// most what was left / 16), and each caller's reservation in flight
	// and row not yet written (one request's most: ~11 prompt tokens
	// estimated + 100 max_tokens at $0.001 a token).
	oneRequest := store.MicroUSD(111_000)
	changes := store.MicroUSD(1)
	if fault == "cut and back" {
		changes = 2
	}
	bound := limit + changes*(2*limit/16+2*callers*oneRequest)
	if spent > bound || spent < limit-2*oneRequest {
		t.Errorf("%d requests spent $%s of a $%s budget; want at most $%s and close to the budget", ok.Load(), spent, limit, bound)
	}
}
