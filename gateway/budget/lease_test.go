package budget

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// fakeSource is the control plane in memory: budgets per organization, a
// spend the request log reports for every budget, alert claims.
type fakeSource struct {
	mu      sync.Mutex
	budgets map[uuid.UUID][]store.Budget
	spend   store.MicroUSD
	claims  map[string]bool
}

func newFakeSource(bs ...store.Budget) *fakeSource {
	f := &fakeSource{budgets: map[uuid.UUID][]store.Budget{}, claims: map[string]bool{}}
	for _, b := range bs {
		f.budgets[b.OrgID] = append(f.budgets[b.OrgID], b)
	}
	return f
}

func (f *fakeSource) BudgetsFor(_ context.Context, org uuid.UUID) ([]store.Budget, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.budgets[org], nil
}

func (f *fakeSource) BudgetSpend(context.Context, store.Budget, time.Time, time.Time) (store.MicroUSD, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.spend, nil
}

func (f *fakeSource) ClaimBudgetAlert(_ context.Context, _, b uuid.UUID, w time.Time, permille int) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := b.String() + w.String() + strconv.Itoa(permille)
	if f.claims[k] {
		return false, nil
	}
	f.claims[k] = true
	return true, nil
}

func dayBudget(org uuid.UUID, limit store.MicroUSD) store.Budget {
	return store.Budget{ID: uuid.New(), OrgID: org, Limit: limit, Window: store.BudgetWindow{Kind: "day"}}
}

func newTestEnforcer(t *testing.T, src Source, rdb redis.UniversalClient, prefix string) *Enforcer {
	t.Helper()
	e, err := New(Options{Source: src, Redis: rdb, Prefix: prefix, RedisTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// redisSpend sums a budget's counter in Redis (leases and reservations in
// flight included).
func redisSpend(t *testing.T, rdb redis.UniversalClient, e *Enforcer, b store.Budget) store.MicroUSD {
	t.Helper()
	h, err := rdb.HGetAll(context.Background(), e.key(b)).Result()
	if err != nil {
		t.Fatal(err)
	}
	var sum store.MicroUSD
	for f, v := range h {
		if f != "r" {
			n, _ := strconv.ParseInt(v, 10, 64)
			sum += store.MicroUSD(n)
		}
	}
	return sum
}

// spendConcurrently runs sixteen callers spread over replicas, each
// request reserving amount of org's budget and costing 70-100% of it,
// until the budget refuses; it returns how many were admitted and what
// they spent, and fails t unless that is at most limit and within 16
// requests of it.
func spendConcurrently(t *testing.T, replicas []*Enforcer, org uuid.UUID, limit, amount store.MicroUSD) (int64, store.MicroUSD) {
	t.Helper()
	ctx := context.Background()
	var spent, requests atomic.Int64
	var wg sync.WaitGroup
	for i := range 16 {
		e := replicas[i%len(replicas)]
		wg.Go(func() {
			for n := 0; ; n++ {
				d, res, err := e.Reserve(ctx, Request{Org: org, Max: amount})
				if err != nil {
					t.Error(err)
					return
				}
				if !d.Allowed {
					return
				}
				if d.Remaining > limit {
					t.Errorf("remaining %s of a budget of %s", d.Remaining, limit)
				}
				requests.Add(1)
				actual := amount - store.MicroUSD(n%4)*1000 // 70-100% of the reservation
				spent.Add(int64(actual))
				e.Settle(ctx, res, actual)
			}
		})
	}
	wg.Wait()
	got := store.MicroUSD(spent.Load())
	if got > limit || got < limit-16*amount {
		t.Errorf("%d requests spent %s of a budget of %s; want at most the budget and close to it", requests.Load(), got, limit)
	}
	return requests.Load(), got
}

// Two replicas with leases, sixteen callers, requests each reserving a
// cent and costing less: together they spend at most the budget and
// close to it, and most admissions are decided from a lease, without a
// round trip. Another organization's budget is untouched.
func TestLeaseTwoReplicasBound(t *testing.T) {
	rdb := storetest.Redis(t)
	org, other := uuid.New(), uuid.New()
	limit := store.MicroUSD(5_000_000)
	b, bOther := dayBudget(org, limit), dayBudget(other, 1_000_000)
	src := newFakeSource(b, bOther)
	prefix := "bulkhead:budget:test:" + uuid.NewString()
	replicas := []*Enforcer{newTestEnforcer(t, src, rdb, prefix), newTestEnforcer(t, src, rdb, prefix)}
	ctx := context.Background()

	const amount = store.MicroUSD(10_000)
	requests, got := spendConcurrently(t, replicas, org, limit, amount)
	var leased, fetched float64
	for _, e := range replicas {
		leased += testutil.ToFloat64(e.m.leased)
		fetched += testutil.ToFloat64(e.m.fetched)
	}
	if leased+fetched != float64(requests) || fetched > leased/4 {
		t.Errorf("%v admissions from leases, %v by Redis, of %d", leased, fetched, requests)
	}
	t.Logf("%d requests spent %s; %v admitted from leases, %v by Redis", requests, got, leased, fetched)

	// Tenant isolation: the other organization's budget is whole, and a
	// request of it never sees org's.
	d, res, err := replicas[0].Reserve(ctx, Request{Org: other, Max: amount})
	if err != nil || !d.Allowed || d.Limit != bOther.Limit || d.Remaining != bOther.Limit-amount {
		t.Errorf("other organization: %+v %v", d, err)
	}
	replicas[0].Settle(ctx, res, 0)
	if d, _, err := replicas[1].Reserve(ctx, Request{Org: uuid.New(), Max: amount}); err != nil || d.Applies {
		t.Errorf("an organization without budgets: %+v %v", d, err)
	}
}

// With one replica the remaining budget of a leased admission is exact;
// when Run ends, the leases go back and the counter holds what was spent.
func TestLeaseRemainingAndGiveBack(t *testing.T) {
	rdb := storetest.Redis(t)
	org := uuid.New()
	limit := store.MicroUSD(1_000_000)
	b := dayBudget(org, limit)
	e := newTestEnforcer(t, newFakeSource(b), rdb, "bulkhead:budget:test:"+uuid.NewString())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()

	var spent store.MicroUSD
	for i := range 50 {
		d, res, err := e.Reserve(ctx, Request{Org: org, Max: 5000})
		if err != nil || !d.Allowed {
			t.Fatalf("request %d: %+v %v", i, d, err)
		}
		if want := limit - spent - 5000; d.Remaining != want {
			t.Fatalf("request %d: remaining %s, want %s", i, d.Remaining, want)
		}
		actual := store.MicroUSD(1000 + i*100) // some above the reservation
		spent += actual
		e.Settle(ctx, res, actual)
	}
	if c := redisSpend(t, rdb, e, b); c <= spent {
		t.Errorf("counter %s with a lease, spent %s", c, spent)
	}
	if f := testutil.ToFloat64(e.m.fetched); f > 5 {
		t.Errorf("%v round trips for 50 requests", f)
	}
	cancel()
	<-done
	if c := redisSpend(t, rdb, e, b); c != spent {
		t.Errorf("after Run, counter %s, spent %s", c, spent)
	}
}

// A lost counter is rebuilt from the request log under a new generation:
// a lease of the old one is never given back into it.
func TestLeaseOfALostCounter(t *testing.T) {
	rdb := storetest.Redis(t)
	org := uuid.New()
	b := dayBudget(org, 1_000_000)
	src := newFakeSource(b)
	e := newTestEnforcer(t, src, rdb, "bulkhead:budget:test:"+uuid.NewString())
	ctx := context.Background()
	_, res, err := e.Reserve(ctx, Request{Org: org, Max: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.Del(ctx, e.key(b)).Err(); err != nil {
		t.Fatal(err)
	}
	src.mu.Lock()
	src.spend = 300_000 // the request log's spend
	src.mu.Unlock()
	e.Settle(ctx, res, 500)                                     // its correction has no counter to go to
	e.giveBack(ctx, time.Now(), true)                           // nor the old lease
	d, res, err := e.Reserve(ctx, Request{Org: org, Max: 1000}) // rebuilt on the way
	if err != nil || !d.Allowed {
		t.Fatal(d, err)
	}
	e.giveBack(ctx, time.Now(), true) // the new lease goes back to the new counter
	if c := redisSpend(t, rdb, e, b); c != 300_000+1000 {
		t.Errorf("counter %s, want the log's 300000 and the reservation's 1000", c)
	}
	e.Settle(ctx, res, 1000)
}

// Redis unreachable: what a replica leased keeps being spent, then
// budgets fail closed (ErrUnavailable: the gateway answers 503).
func TestLeaseWithoutRedis(t *testing.T) {
	srv := storetest.StartRedisServer(t)
	opts, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	opts.MaxRetries = -1
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	org := uuid.New()
	e := newTestEnforcer(t, newFakeSource(dayBudget(org, 1_000_000)), rdb, "bulkhead:budget:test")
	ctx := context.Background()
	if d, _, err := e.Reserve(ctx, Request{Org: org, Max: 1000}); err != nil || !d.Allowed {
		t.Fatal(d, err)
	}
	srv.Kill()
	n := 0
	for ; n < 10_000; n++ {
		d, _, err := e.Reserve(ctx, Request{Org: org, Max: 1000})
		if errors.Is(err, ErrUnavailable) {
			break
		}
		if err != nil || !d.Allowed {
			t.Fatalf("request %d: %+v %v", n, d, err)
		}
	}
	// The lease was min(256 × $0.001, $0.999 / 16) = $0.062437.
	if n != 62 {
		t.Errorf("%d requests admitted from the lease after Redis went away, want 62", n)
	}
}

// BenchmarkReserveSettle is the enforcer's part of a request with an
// organization budget and a key budget that are far from used up: most
// decisions come from the replica's leases.
func BenchmarkReserveSettle(b *testing.B) {
	rdb := storetest.Redis(b)
	org, key := uuid.New(), uuid.New()
	ob, kb := dayBudget(org, store.MaxBudget), dayBudget(org, store.MaxBudget)
	kb.KeyID = &key
	e, err := New(Options{Source: newFakeSource(ob, kb), Redis: rdb, Prefix: "bulkhead:budget:bench:" + uuid.NewString()})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			d, res, err := e.Reserve(ctx, Request{Org: org, Key: key, Max: 60_000})
			if err != nil || !d.Allowed {
				b.Error(d, err)
				return
			}
			e.Settle(ctx, res, 40_000)
		}
	})
	b.ReportMetric(testutil.ToFloat64(e.m.fetched)/float64(b.N), "redis/op")
}
