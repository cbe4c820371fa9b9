package memory

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const mib = 1 << 20

// step decides as the package doc says: after a busy spell, once no
// collection has run for Quiet, if the heap is worth it; never for its
// own collection; never while collections keep coming.
func TestStep(t *testing.T) {
	type look struct {
		at       time.Duration // since the start
		cycles   uint64
		resident uint64 // MiB
		want     bool
	}
	cases := []struct {
		name  string
		looks []look
	}{
		{"a burst, then quiet: once Quiet has passed", []look{
			{0, 1, 20, false}, {1 * time.Second, 5, 80, false}, {2 * time.Second, 9, 120, false},
			{11 * time.Second, 9, 120, false}, {12 * time.Second, 9, 120, true},
		}},
		{"collections every 5s (under load): never", []look{
			{0, 1, 100, false}, {5 * time.Second, 2, 100, false}, {10 * time.Second, 3, 100, false},
			{15 * time.Second, 4, 100, false}, {20 * time.Second, 5, 100, false}, {24 * time.Second, 5, 100, false},
		}},
		{"quiet, but the heap is small: not worth a collection", []look{
			{0, 1, 10, false}, {time.Minute, 1, 15, false},
		}},
		{"quiet and small, then grown without a collection: worth it", []look{
			{0, 1, 10, false}, {time.Minute, 1, 15, false}, {2 * time.Minute, 1, 17, true},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := New(Options{})
			start := time.Now()
			for i, l := range tc.looks {
				if got := r.step(start.Add(l.at), sample{cycles: l.cycles, resident: l.resident * mib}); got != l.want {
					t.Errorf("look %d at %s: release %t, want %t", i, l.at, got, l.want)
				}
			}
		})
	}
}

// After a release, the floor is what stayed resident: the next spell must
// add MinExcess, or a quarter of a large floor, before it is worth a
// collection, and the release's own collection does not make a spell.
func TestFloorAfterRelease(t *testing.T) {
	f := &fakeRuntime{s: sample{cycles: 3, resident: 400 * mib}, after: sample{cycles: 4, resident: 200 * mib}}
	r := New(Options{})
	r.read, r.release = f.read, f.release
	start := time.Now()
	r.step(start, f.read())
	if !r.step(start.Add(DefaultQuiet), f.read()) {
		t.Fatal("no release after a quiet spell")
	}
	r.releaseNow() // the floor is now 200 MiB: worth it from 250 (a quarter above it)
	now := time.Now()
	for _, tc := range []struct {
		cycles   uint64
		resident uint64
		after    time.Duration
		want     bool
	}{
		{4, 240 * mib, time.Hour, false}, // quiet for an hour, but no collection since its own
		{5, 240 * mib, 0, false},         // a natural collection: a spell begins
		{5, 240 * mib, time.Hour, false}, // quiet, but 240 < 250
		{5, 250 * mib, time.Hour, true},
	} {
		if got := r.step(now.Add(tc.after), sample{cycles: tc.cycles, resident: tc.resident}); got != tc.want {
			t.Errorf("cycles %d, %d MiB, %s later: release %t, want %t", tc.cycles, tc.resident/mib, tc.after, got, tc.want)
		}
	}
}

// Run releases once after a busy spell, not again while nothing
// happens, counts it on /metrics, and returns nil when its ctx ends.
func TestRunReleasesOnce(t *testing.T) {
	f := &fakeRuntime{s: sample{cycles: 7, resident: 100 * mib}, after: sample{cycles: 8, resident: 30 * mib}}
	r := New(Options{Quiet: 20 * time.Millisecond})
	r.read, r.release = f.read, f.release
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()

	deadline := time.Now().Add(5 * time.Second)
	for f.released() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // five Quiets more
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its ctx ended")
	}
	if n := f.released(); n != 1 {
		t.Errorf("released %d times, want once", n)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(r)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		got[mf.GetName()] = mf.GetMetric()[0].GetCounter().GetValue()
	}
	if got["bulkhead_memory_releases_total"] != 1 {
		t.Errorf("bulkhead_memory_releases_total = %v, want 1", got["bulkhead_memory_releases_total"])
	}
	if _, ok := got["bulkhead_memory_release_seconds_total"]; !ok {
		t.Error("bulkhead_memory_release_seconds_total is not exported")
	}
}

// With the real runtime: a heap that was live at the last collection and
// is garbage now, with nothing allocating after it, stays resident until
// the runtime's forced collection two minutes later; Run gives it back
// within Quiet.
func TestRunReturnsTheHeap(t *testing.T) {
	liveThenGarbage()
	if s := readRuntime(); s.resident < 64*mib {
		t.Fatalf("resident heap %d MiB before Run, want the 64 MiB still there", s.resident/mib)
	}

	r := New(Options{Quiet: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for r.releases.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if r.releases.Load() == 0 {
		t.Fatal("nothing released within 10s")
	}
	if s := readRuntime(); s.resident > 32*mib {
		t.Errorf("resident heap %d MiB after the release, want the 64 MiB gone", s.resident/mib)
	}
}

// liveThenGarbage leaves 64 MiB of garbage that the last collection found
// live, so that the heap goal is about 128 MiB and no collection comes
// for it while nothing else allocates: a burst's end in small.
func liveThenGarbage() {
	keep := make([][]byte, 0, 1024)
	for range cap(keep) {
		keep = append(keep, make([]byte, 64<<10))
	}
	runtime.GC()
	runtime.KeepAlive(keep)
}

// fakeRuntime stands for the runtime: release turns s into after.
type fakeRuntime struct {
	mu       sync.Mutex
	s, after sample
	n        int
}

func (f *fakeRuntime) read() sample {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.s
}

func (f *fakeRuntime) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.s, f.n = f.after, f.n+1
}

func (f *fakeRuntime) released() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}
