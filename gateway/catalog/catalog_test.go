package catalog

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/store"
)

type fakeSource struct {
	entries []store.CatalogEntry
	reads   atomic.Int64
	fail    atomic.Bool
}

func (f *fakeSource) CatalogFor(context.Context, uuid.UUID) ([]store.CatalogEntry, error) {
	f.reads.Add(1)
	if f.fail.Load() {
		return nil, errors.New("database down")
	}
	return f.entries, nil
}

func yes() *bool { b := true; return &b }
func no() *bool  { b := false; return &b }

func TestViewDecisions(t *testing.T) {
	entries := []store.CatalogEntry{
		{Name: "shared", Upstream: "default", Enabled: true, InputPrice: 1},
		{Name: "revoked", Upstream: "default", Enabled: true, Access: no()},
		{Name: "granted", Upstream: "default", Enabled: true, Access: yes()},
		{Name: "off", Upstream: "default", Enabled: false, Access: yes()},
		{Name: "shadowed", Upstream: "default", Enabled: true, InputPrice: 1},
		{Name: "shadowed", Upstream: "other", Enabled: true, Own: true, InputPrice: 2},
		{Name: "mine-off", Upstream: "default", Enabled: false, Own: true},
	}
	for _, allow := range []bool{true, false} {
		v := newView(entries, allow)
		cases := map[string]struct {
			usable, decided bool
		}{
			"shared": {allow, true}, "revoked": {false, true}, "granted": {true, true}, "off": {false, true},
			"shadowed": {true, true}, "mine-off": {false, true}, "elsewhere": {false, !allow},
		}
		for name, want := range cases {
			m, decided := v.Lookup(name)
			if (m != nil) != want.usable || decided != want.decided {
				t.Errorf("default allow %v: Lookup(%s) = %v, %v; want usable %v, decided %v", allow, name, m, decided, want.usable, want.decided)
			}
		}
		if m, _ := v.Lookup("shadowed"); m == nil || !m.Own || m.Upstream != "other" || m.InputPrice != 2 {
			t.Errorf("the tenant's own model does not replace the shared one: %+v", m)
		}
	}
}

// Views are read once per TTL, dropped by invalidations, and a failed read
// keeps the last view serving.
func TestCatalogCaches(t *testing.T) {
	src := &fakeSource{entries: []store.CatalogEntry{{Name: "m", Upstream: "default", Enabled: true}}}
	c, err := New(Options{Source: src, DefaultAllow: true, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, org, now := context.Background(), uuid.New(), time.Now()
	for range 100 {
		if _, err := c.View(ctx, org, now); err != nil {
			t.Fatal(err)
		}
	}
	if n := src.reads.Load(); n != 1 {
		t.Errorf("%d reads for 100 requests within the TTL, want 1", n)
	}
	c.apply("o:" + org.String())
	c.View(ctx, org, now) //nolint:errcheck // counted below
	c.apply("*")
	c.View(ctx, org, now) //nolint:errcheck // counted below
	if n := src.reads.Load(); n != 3 {
		t.Errorf("%d reads after two invalidations, want 3", n)
	}
	src.fail.Store(true)
	if v, err := c.View(ctx, org, now.Add(2*time.Hour)); err != nil || v == nil {
		t.Errorf("a failed read without the last view: %v", err)
	}
	if _, err := c.View(ctx, uuid.New(), now); err == nil {
		t.Error("an organization never read, with the database down: no error")
	}
}

// batchSource is a fakeSource that also reads many organizations at once,
// each its own entries.
type batchSource struct {
	fakeSource
	batches atomic.Int64
	orgs    atomic.Int64
}

func (f *batchSource) CatalogsFor(_ context.Context, orgs []uuid.UUID) (map[uuid.UUID][]store.CatalogEntry, error) {
	f.batches.Add(1)
	f.orgs.Add(int64(len(orgs)))
	out := map[uuid.UUID][]store.CatalogEntry{}
	for _, org := range orgs {
		out[org] = []store.CatalogEntry{{Name: "own-" + org.String(), Upstream: "default", Enabled: true, Own: true}}
	}
	return out, nil
}

// A batching source reads first views in batches, each organization gets
// its own entries, and Prefetch reads a view View then finds cached.
func TestCatalogBatchesAndPrefetch(t *testing.T) {
	src := &batchSource{}
	c, err := New(Options{Source: src, DefaultAllow: true, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, now := context.Background(), time.Now()
	orgs := make([]uuid.UUID, 50)
	var wg sync.WaitGroup
	for i := range orgs {
		orgs[i] = uuid.New()
		wg.Go(func() {
			v, err := c.View(ctx, orgs[i], now)
			if err != nil {
				t.Error(err)
				return
			}
			for j, other := range orgs[:i+1] {
				if m, _ := v.Lookup("own-" + other.String()); (m != nil) != (j == i) {
					t.Errorf("organization %d: the model of %d usable: %v", i, j, m != nil)
				}
			}
		})
	}
	wg.Wait()
	if src.reads.Load() != 0 || src.orgs.Load() != int64(len(orgs)) {
		t.Errorf("%d single reads and %d organizations in batches, want 0 and %d", src.reads.Load(), src.orgs.Load(), len(orgs))
	}
	org := uuid.New()
	batches := src.batches.Load()
	c.Prefetch(org, now)
	for !c.cached(org) { // the prefetch's read done and its view cached
		runtime.Gosched()
	}
	if _, err := c.View(ctx, org, now); err != nil {
		t.Fatal(err)
	}
	c.Prefetch(org, now) // cached: no read
	if _, err := c.View(ctx, org, now); err != nil {
		t.Fatal(err)
	}
	if n := src.batches.Load(); n != batches+1 {
		t.Errorf("%d batches after a prefetch and two views, want %d", n, batches+1)
	}
}

func (c *Catalog) cached(org uuid.UUID) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.views[org] != nil
}

// BenchmarkView is the catalog's cost per request: a cached view.
func BenchmarkView(b *testing.B) {
	src := &fakeSource{entries: []store.CatalogEntry{{Name: "m", Upstream: "default", Enabled: true}}}
	c, _ := New(Options{Source: src, DefaultAllow: true, TTL: time.Hour})
	ctx, org := context.Background(), uuid.New()
	b.ReportAllocs()
	for b.Loop() {
		v, err := c.View(ctx, org, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		if m, _ := v.Lookup("m"); m == nil {
			b.Fatal("m not usable")
		}
	}
}
