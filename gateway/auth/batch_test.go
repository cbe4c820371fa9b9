package auth_test

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/gateway/apikey"
	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/store"
)

// gatedStore holds its first calls until gate closes, and records how many
// keys each call looked up.
type gatedStore struct {
	*store.Store
	gate    chan struct{}
	holding int32
	held    atomic.Int32
	mu      sync.Mutex
	sizes   []int
}

func (g *gatedStore) LookupKeys(ctx context.Context, refs []store.KeyRef) (map[store.KeyRef]store.Key, error) {
	g.mu.Lock()
	g.sizes = append(g.sizes, len(refs))
	g.mu.Unlock()
	if g.held.Add(1) <= g.holding {
		<-g.gate
	}
	return g.Store.LookupKeys(ctx, refs)
}

// Cold keys of many organizations, looked up at once, share PostgreSQL
// transactions; each still resolves to the organization its credential
// names, an unknown key among them is refused, and the batch warms L2 for
// every replica: a second instance finds all of them in Redis, the
// unknown one as a tombstone, without PostgreSQL.
func TestColdKeysShareBatches(t *testing.T) {
	f := newFixture(t)
	const n = 12
	orgs := make([]uuid.UUID, n)
	keys := make([]string, n)
	recs := make([]store.Key, n)
	for i := range orgs {
		orgs[i] = f.org(t)
		keys[i], recs[i] = f.key(t, orgs[i], nil)
	}
	unknown, _ := apikey.Generate(orgs[0])
	keys = append(keys, unknown)

	gs := &gatedStore{Store: f.st, gate: make(chan struct{}), holding: 2}
	a := f.instance(t, false, func(o *auth.Options) { o.Store = gs })
	var wg sync.WaitGroup
	got := make([]*auth.Principal, len(keys))
	errs := make([]error, len(keys))
	start := func(i int) {
		wg.Go(func() { got[i], errs[i] = authn(a, keys[i]) })
	}
	// waitUntil waits for cond (both held batches are released on failure).
	waitUntil := func(what string, cond func(sizes []int) bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			gs.mu.Lock()
			sizes := append([]int(nil), gs.sizes...)
			gs.mu.Unlock()
			if cond(sizes) {
				return
			}
			if time.Now().After(deadline) {
				close(gs.gate)
				t.Fatalf("batches %v, %d queued: want %s", sizes, a.QueuedForTest(), what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// Two keys, one after the other: each starts a batch of its own, held
	// at PostgreSQL (two batches in flight). Started together, the keys
	// could all be queued before the first batch is taken, making one.
	for i := range 2 {
		start(i)
		waitUntil("one more batch held", func(sizes []int) bool { return len(sizes) == i+1 })
	}
	// Every other key waits for the next batch.
	for i := 2; i < len(keys); i++ {
		start(i)
	}
	waitUntil("two held and every other key queued", func(sizes []int) bool {
		return len(sizes) == 2 && sizes[0]+sizes[1]+a.QueuedForTest() == len(keys)
	})
	close(gs.gate)
	wg.Wait()

	for i := range n {
		if errs[i] != nil || got[i].Org != orgs[i] || got[i].KeyID != recs[i].ID {
			t.Errorf("key %d: %+v, %v; want its own organization %s", i, got[i], errs[i], orgs[i])
		}
	}
	if !errors.Is(errs[n], auth.ErrUnauthenticated) {
		t.Errorf("unknown key in a batch: err = %v, want ErrUnauthenticated", errs[n])
	}
	s := a.Stats()
	if s.L3Lookups != uint64(len(keys)) || s.L3Queries > 3 {
		t.Errorf("%d keys looked up in %d queries (sizes %v), want %d in at most 3: two held, then one batch of the rest",
			s.L3Lookups, s.L3Queries, gs.sizes, len(keys))
	}

	b := f.instance(t, false, nil)
	for i := range n {
		if p, err := authn(b, keys[i]); err != nil || p.Org != orgs[i] {
			t.Errorf("second instance, key %d: %+v, %v", i, p, err)
		}
	}
	if _, err := authn(b, unknown); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("second instance, unknown key: err = %v", err)
	}
	if s := b.Stats(); s.L2Hits != n+1 || s.L3Lookups != 0 {
		t.Errorf("second instance: %d L2 hits, %d PostgreSQL look-ups; want %d and 0 (L2 warmed by the batch)", s.L2Hits, s.L3Lookups, n+1)
	}
}

// BenchmarkL1EntryBytes measures the heap an L1 entry holds (the
// principal, its texts and the cache's own bookkeeping), and a negative
// entry, for sizing BULKHEAD_AUTH_CACHE_SIZE and
// BULKHEAD_AUTH_NEGATIVE_CACHE_SIZE against the gateway's memory: the heap
// after filling 100,000 entries, less the heap before, per entry.
func BenchmarkL1EntryBytes(b *testing.B) {
	const n = 100_000
	for _, c := range []struct {
		name string
		fill func(*auth.Authenticator)
	}{
		{"key", func(a *auth.Authenticator) { a.FillL1ForTest(n) }},
		{"negative", func(a *auth.Authenticator) { a.FillNegativeForTest(n) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				a, err := auth.New(auth.Options{Store: &store.Store{}, CacheSize: n, NegativeSize: n})
				if err != nil {
					b.Fatal(err)
				}
				c.fill(a)
				runtime.GC()
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/entry")
				runtime.KeepAlive(a)
			}
		})
	}
}
