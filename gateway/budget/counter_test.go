package budget

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// pgBudget creates an organization and its day budget of limit in
// PostgreSQL (PostgreSQL's counters reference their budget), and returns
// the app role's store and the budget.
func pgBudget(t testing.TB, limit store.MicroUSD) (*store.Store, store.Budget) {
	t.Helper()
	st := storetest.Open(t, store.Options{})
	org := uuid.New()
	ctx := context.Background()
	if _, err := storetest.OwnerPool(t).Exec(ctx, `INSERT INTO organizations (id, name) VALUES ($1, $2)`, org, "budget "+org.String()); err != nil {
		t.Fatal(err)
	}
	b, err := storetest.Admin(t).SetBudget(ctx, store.Budget{OrgID: org, Limit: limit, Window: store.BudgetWindow{Kind: "day"}})
	if err != nil {
		t.Fatal(err)
	}
	return st, b
}

// pgSpend sums b's counter in PostgreSQL (leases and reservations in
// flight included); -1 if there is none.
func pgSpend(t *testing.T, b store.Budget) store.MicroUSD {
	t.Helper()
	var sum *int64
	err := storetest.OwnerPool(t).QueryRow(context.Background(), `SELECT (SELECT sum(s) FROM unnest(spends) s)::bigint FROM budget_counters
		WHERE organization_id = $1 AND budget_id = $2`, b.OrgID, b.ID).Scan(&sum)
	if err != nil || sum == nil {
		return -1
	}
	return store.MicroUSD(*sum)
}

// Without Redis: two replicas lease from PostgreSQL's counter, sixteen
// callers: together they spend at most the budget and close to it, most
// admissions from leases; the counter holds what they spent once Run
// gives the leases back.
func TestLeaseTwoReplicasPostgres(t *testing.T) {
	limit := store.MicroUSD(2_000_000)
	st, b := pgBudget(t, limit)
	src := newFakeSource(b)
	var replicas []*Enforcer
	for range 2 {
		e, err := New(Options{Source: src, Counters: st})
		if err != nil {
			t.Fatal(err)
		}
		replicas = append(replicas, e)
	}
	ctx := context.Background()
	requests, got := spendConcurrently(t, replicas, b.OrgID, limit, 10_000)
	var leased, fetched float64
	for _, e := range replicas {
		leased += testutil.ToFloat64(e.m.leased)
		fetched += testutil.ToFloat64(e.m.fetchedPG)
		e.giveBack(ctx, time.Now(), true)
	}
	if leased+fetched != float64(requests) || fetched > leased/2 {
		t.Errorf("%v admissions from leases, %v by PostgreSQL, of %d", leased, fetched, requests)
	}
	if c := pgSpend(t, b); c != got {
		t.Errorf("PostgreSQL's counter holds %s, the requests spent %s", c, got)
	}
	t.Logf("%d requests spent %s; %v admitted from leases, %v by PostgreSQL", requests, got, leased, fetched)
}

// Redis unreachable, then back: the replica moves to PostgreSQL's
// counter, built from the request log; when Redis answers again, the
// PostgreSQL counter is closed and Redis's, which missed what PostgreSQL
// counted, is rebuilt from the request log. With PostgreSQL down too,
// budgets fail closed.
func TestLeaseRedisFallback(t *testing.T) {
	st, b := pgBudget(t, 10_000_000)
	srv := storetest.StartRedisServer(t)
	proxy := storetest.NewFaultProxy(t, srv.Addr)
	rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	src := newFakeSource(b)
	down := &flakyCounters{Counters: st}
	e, err := New(Options{Source: src, Redis: rdb, Counters: down, RedisTimeout: 200 * time.Millisecond, Prefix: "bulkhead:budget:test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var spent store.MicroUSD
	spend := func(n int, max, cost store.MicroUSD) {
		t.Helper()
		for i := range n {
			d, res, err := e.Reserve(ctx, Request{Org: b.OrgID, Max: max})
			if err != nil || !d.Allowed {
				t.Fatalf("request %d: %+v %v", i, d, err)
			}
			e.Settle(ctx, res, cost)
			spent += cost
		}
	}
	log := func() { // the request log has every request's row
		src.mu.Lock()
		src.spend = spent
		src.mu.Unlock()
	}
	spend(20, 100_000, 50_000) // Redis
	log()
	e.giveBack(ctx, time.Now(), true) // (a lease held keeps being spent: lease.go)
	proxy.Cut("refuse")
	spend(40, 100_000, 50_000) // PostgreSQL, its counter from the log
	if f := testutil.ToFloat64(e.m.fetchedPG); f == 0 {
		t.Fatal("no admission by PostgreSQL's counter while Redis was cut off")
	}
	e.giveBack(ctx, time.Now(), true)
	if c := pgSpend(t, b); c != spent {
		t.Errorf("PostgreSQL's counter %s, spent %s", c, spent)
	}
	log()
	proxy.Restore()
	time.Sleep(redisCooldown + 100*time.Millisecond) // then a request probes Redis
	spend(1, 100_000, 50_000)
	if c := pgSpend(t, b); c != -1 {
		t.Errorf("PostgreSQL's counter still open (%s) after the return to Redis", c)
	}
	e.giveBack(ctx, time.Now(), true)
	if c := redisSpend(t, rdb, e, b); c != spent {
		t.Errorf("Redis's counter %s after the return, spent %s: it must be rebuilt from the log", c, spent)
	}

	// Both down: once this replica's lease is spent, 503.
	proxy.Cut("refuse")
	down.down.Store(true)
	time.Sleep(redisCooldown)
	for i := 0; ; i++ {
		_, _, err := e.Reserve(ctx, Request{Org: b.OrgID, Max: 100_000})
		if errors.Is(err, ErrUnavailable) {
			break
		}
		if err != nil || i > 1000 {
			t.Fatalf("request %d with Redis and PostgreSQL down: %v", i, err)
		}
	}
}

// flakyCounters is PostgreSQL's counters that can be made unreachable.
type flakyCounters struct {
	Counters
	down atomic.Bool
}

var errDown = errors.New("connection refused")

func (f *flakyCounters) LeaseBudgets(ctx context.Context, org uuid.UUID, amount, div int64, ps []store.BudgetLease) ([]int64, error) {
	if f.down.Load() {
		return nil, errDown
	}
	return f.Counters.LeaseBudgets(ctx, org, amount, div, ps)
}

func (f *flakyCounters) InitBudgetCounter(ctx context.Context, org, budget uuid.UUID, gen, bucket, spent int64, ttl time.Duration) error {
	if f.down.Load() {
		return errDown
	}
	return f.Counters.InitBudgetCounter(ctx, org, budget, gen, bucket, spent, ttl)
}

func (f *flakyCounters) CloseBudgetCounter(ctx context.Context, org, budget uuid.UUID, gen int64) (bool, error) {
	if f.down.Load() {
		return false, errDown
	}
	return f.Counters.CloseBudgetCounter(ctx, org, budget, gen)
}

// BenchmarkReserveSettlePostgres is BenchmarkReserveSettle (one
// organization budget) with PostgreSQL's counters instead of Redis's.
func BenchmarkReserveSettlePostgres(b *testing.B) {
	for _, counters := range []string{"redis", "postgres"} {
		b.Run(counters, func(b *testing.B) {
			st, bg := pgBudget(b, store.MaxBudget)
			o := Options{Source: newFakeSource(bg), Counters: st}
			if counters == "redis" {
				o = Options{Source: newFakeSource(bg), Redis: storetest.Redis(b), Prefix: "bulkhead:budget:bench:" + uuid.NewString()}
			}
			e, err := New(o)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					d, res, err := e.Reserve(ctx, Request{Org: bg.OrgID, Max: 60_000})
					if err != nil || !d.Allowed {
						b.Error(d, err)
						return
					}
					e.Settle(ctx, res, 40_000)
				}
			})
			b.ReportMetric((testutil.ToFloat64(e.m.fetched)+testutil.ToFloat64(e.m.fetchedPG))/float64(b.N), "roundtrips/op")
		})
	}
}
