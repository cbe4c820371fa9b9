// Package memory gives a burst's memory back to the operating system once
// the burst is over, instead of two minutes later.
//
// Why it is needed: the Go runtime sizes its heap goal from the live heap
// it found at the last collection, and its background scavenger keeps
// about 10% above that goal resident. A burst ends with a goal set while
// the burst's records, buffers and bodies were live; then the process goes
// quiet, allocates little, so no collection comes to lower the goal or to
// free the burst's garbage, and the memory stays resident until the
// runtime's forced collection, two minutes after the last one (measured
// with bulkhead-bench memory).
//
// The Releaser watches the runtime's figures and, when collections have
// stopped for a while after a busy spell and the heap holds well above
// what it held after its last release, calls debug.FreeOSMemory once: a
// full collection, then every free page back to the OS.
package memory

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Defaults of Options' zero fields.
const (
	DefaultQuiet     = 10 * time.Second // no collection for this long ends a busy spell
	DefaultMinExcess = 16 << 20         // bytes of heap above the last release worth a collection
	maxInterval      = time.Second      // the longest between two looks; Quiet/4 if shorter
)

// Options tunes New. Every zero field takes the default named beside it.
type Options struct {
	// Quiet is how long the garbage collector must not have run, after it
	// has run at least once since the last release, before the Releaser
	// acts. It bounds the cost: at most one extra collection per natural
	// one, and none while collections come more often than Quiet (under
	// load). 0: DefaultQuiet.
	Quiet time.Duration
	// MinExcess is the least heap, above what stayed resident after the
	// last release, that is worth a collection; the Releaser asks for a
	// quarter of that floor if that is more, so that a large live heap
	// (big caches) is not marked over and over for a few MiB. 0:
	// DefaultMinExcess.
	MinExcess uint64
	// Log receives a debug line per release. nil: no logging.
	Log *zap.Logger
}

// Releaser is the loop (Run) and its counters (a prometheus.Collector).
// Create it with New.
type Releaser struct {
	quiet     time.Duration
	minExcess uint64
	log       *zap.Logger

	// read and release are the runtime's (readRuntime, debug.FreeOSMemory);
	// tests replace them.
	read    func() sample
	release func()

	releases atomic.Uint64 // releases made
	spent    atomic.Int64  // nanoseconds spent in release

	// The loop's state; only Run's goroutine (or a test calling step) touches it.
	cycles   uint64    // GC cycles at the last look
	lastGC   time.Time // when cycles last changed
	busy     bool      // a collection has run since the last release
	excessAt uint64    // resident heap at which a release is worth it
}

// New returns a Releaser; call Run to start it.
func New(opts Options) *Releaser {
	if opts.Quiet <= 0 {
		opts.Quiet = DefaultQuiet
	}
	if opts.MinExcess == 0 {
		opts.MinExcess = DefaultMinExcess
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	r := &Releaser{quiet: opts.Quiet, minExcess: opts.MinExcess, log: opts.Log,
		read: readRuntime, release: debug.FreeOSMemory}
	r.setFloor(0)
	return r
}

// sample is what the Releaser reads of the runtime.
type sample struct {
	cycles   uint64 // GC cycles completed since the process started
	resident uint64 // heap bytes backed by memory: objects (live or not yet swept), unused span space and free pages not yet returned
	live     uint64 // heap bytes the last collection found live
}

var runtimeMetrics = []string{
	"/gc/cycles/total:gc-cycles",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
	"/gc/heap/live:bytes",
}

func readRuntime() sample {
	ms := make([]metrics.Sample, len(runtimeMetrics))
	for i, name := range runtimeMetrics {
		ms[i].Name = name
	}
	metrics.Read(ms)
	v := func(i int) uint64 {
		if ms[i].Value.Kind() != metrics.KindUint64 {
			return 0 // unknown to this runtime
		}
		return ms[i].Value.Uint64()
	}
	return sample{cycles: v(0), resident: v(1) + v(2) + v(3), live: v(4)}
}

// Run looks at the runtime's figures every Quiet/4 (at most every second)
// and releases memory as the package doc says, until ctx ends; then it
// returns nil. It must run once at a time.
func (r *Releaser) Run(ctx context.Context) error {
	t := time.NewTicker(min(maxInterval, r.quiet/4))
	defer t.Stop()
	r.lastGC, r.busy = time.Now(), true // starting up was busy
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			if r.step(now, r.read()) {
				r.releaseNow()
			}
		}
	}
}

// step takes one look at s, taken at now, and reports whether to release.
func (r *Releaser) step(now time.Time, s sample) bool {
	if s.cycles != r.cycles {
		r.cycles, r.lastGC, r.busy = s.cycles, now, true
		return false
	}
	return r.busy && now.Sub(r.lastGC) >= r.quiet && s.resident >= r.excessAt
}

// releaseNow releases, then starts the next spell from what stayed
// resident: its own collection does not count as busy.
func (r *Releaser) releaseNow() {
	before := r.read()
	start := time.Now()
	r.release()
	took := time.Since(start)
	after := r.read()
	r.releases.Add(1)
	r.spent.Add(int64(took))
	r.cycles, r.lastGC, r.busy = after.cycles, time.Now(), false
	r.setFloor(after.resident)
	if ce := r.log.Check(zap.DebugLevel, "returned idle heap to the OS"); ce != nil {
		ce.Write(zap.Uint64("resident_before", before.resident), zap.Uint64("resident_after", after.resident),
			zap.Uint64("live_after", after.live), zap.Duration("took", took))
	}
}

// setFloor takes what stayed resident after a release as the floor that
// the next release must be worth its collection above.
func (r *Releaser) setFloor(resident uint64) {
	r.excessAt = resident + max(r.minExcess, resident/4)
}

var (
	releasesDesc = prometheus.NewDesc("bulkhead_memory_releases_total",
		"Times the idle heap was returned to the OS after a busy spell (BULKHEAD_MEMORY_RETURN_AFTER), each a full garbage collection.", nil, nil)
	spentDesc = prometheus.NewDesc("bulkhead_memory_release_seconds_total",
		"Wall time the releases took, their collections included.", nil, nil)
)

var _ prometheus.Collector = (*Releaser)(nil)

// Describe makes the Releaser a prometheus.Collector of its counters.
func (r *Releaser) Describe(ch chan<- *prometheus.Desc) {
	ch <- releasesDesc
	ch <- spentDesc
}

// Collect is safe for concurrent use, also while Run runs.
func (r *Releaser) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(releasesDesc, prometheus.CounterValue, float64(r.releases.Load()))
	ch <- prometheus.MustNewConstMetric(spentDesc, prometheus.CounterValue, time.Duration(r.spent.Load()).Seconds())
}
