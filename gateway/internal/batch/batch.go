// Package batch gathers concurrent callers' look-ups into batches: the
// first read of an organization's model catalog and budget list (one
// PostgreSQL transaction for many organizations, store.CatalogsFor and
// store.BudgetsForOrgs) through Batcher, and gateway/auth's key look-ups
// (a Redis pipeline, a PostgreSQL transaction) through Runner.
//
// There is no collection window. A look-up that finds no batch running
// starts one at once; those that arrive while one runs wait for the next,
// so an idle gateway adds no latency and a busy one sends fewer, larger
// batches (natural batching). A second batch starts beside a running one
// only when a whole batch waits, or when the running one is slow (has run
// for DefaultSlow). With a million keys' first look-ups (bulkhead-bench
// keys, Zipf mix, request log off, three rounds against the build that
// started the second batch at once), batches grew from 2.7-2.8 keys to
// 4.9-5.2; gateway CPU per request fell from 101-109 µs to 84-89,
// PostgreSQL's from 38-42 µs to 28-33, and throughput rose 16-18%. A
// stuck batch holds the keys behind it for DefaultSlow at most.
package batch

import (
	"context"
	"sync"
	"time"
)

// Defaults of Runner and New.
const (
	// DefaultInFlight bounds the batches running at once, and so the
	// pool connections they hold.
	DefaultInFlight = 2
	// DefaultMax bounds the keys of one batch.
	DefaultMax = 128
	// DefaultSlow is how long a batch runs before another may start
	// beside it with less than a whole batch waiting.
	DefaultSlow = 5 * time.Millisecond
)

// Runner runs queued items in batches of at most Max, at most InFlight at
// once, each batch by Run in a goroutine of its own; a second batch starts
// beside a running one when Max items wait or the running one has run for
// Slow. Run must end each item's wait (a channel it closes, say). Set the
// fields before the first Add; a Runner is then safe for concurrent use.
type Runner[T any] struct {
	Run           func(batch []T)
	Max, InFlight int           // 0: DefaultMax, DefaultInFlight
	Slow          time.Duration // 0: DefaultSlow

	mu      sync.Mutex
	queue   []T
	running int
	started time.Time // when the latest batch started
	armed   bool      // a timer will look again once the running batch is slow
}

// Add queues item for the next batch.
func (r *Runner[T]) Add(item T) {
	r.mu.Lock()
	r.queue = append(r.queue, item)
	r.startLocked()
	r.mu.Unlock()
}

// Queued is the number of items waiting for a batch.
func (r *Runner[T]) Queued() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queue)
}

func (r *Runner[T]) max() int            { return orDefault(r.Max, DefaultMax) }
func (r *Runner[T]) inFlight() int       { return orDefault(r.InFlight, DefaultInFlight) }
func (r *Runner[T]) slow() time.Duration { return orDefault(r.Slow, DefaultSlow) }

func orDefault[N int | time.Duration](v, def N) N {
	if v <= 0 {
		return def
	}
	return v
}

// startLocked starts a batch if the queue calls for one, or arms a timer
// that looks again when the running batch turns slow.
func (r *Runner[T]) startLocked() {
	if len(r.queue) == 0 || r.running >= r.inFlight() {
		return
	}
	ran := time.Since(r.started)
	if r.running == 0 || len(r.queue) >= r.max() || ran >= r.slow() {
		r.running++
		go r.drain()
		return
	}
	if !r.armed {
		r.armed = true
		time.AfterFunc(r.slow()-ran, func() {
			r.mu.Lock()
			r.armed = false
			r.startLocked()
			r.mu.Unlock()
		})
	}
}

// drain runs batches until the queue is empty.
func (r *Runner[T]) drain() {
	for {
		r.mu.Lock()
		n := min(len(r.queue), r.max())
		if n == 0 {
			r.queue = nil // let a burst's backing array go
			r.running--
			r.mu.Unlock()
			return
		}
		batch := make([]T, n)
		copy(batch, r.queue)
		clear(r.queue[:n])
		r.queue = r.queue[n:]
		r.started = time.Now()
		r.mu.Unlock()
		r.Run(batch)
	}
}

// Func reads a batch of distinct keys: a value for each key found (a key
// absent from the map is the zero value), or an error for the whole
// batch. It is called with at most Max keys, from at most InFlight
// goroutines at once.
type Func[K comparable, V any] func(keys []K) (map[K]V, error)

// Batcher batches look-ups of K. It is safe for concurrent use.
type Batcher[K comparable, V any] struct {
	run Func[K, V]
	r   Runner[*call[K, V]]
}

type call[K comparable, V any] struct {
	key  K
	val  V
	err  error
	done chan struct{}
}

// New returns a Batcher that reads with run: batches of at most max keys
// (0: DefaultMax), at most inFlight at once (0: DefaultInFlight).
func New[K comparable, V any](run Func[K, V], max, inFlight int) *Batcher[K, V] {
	b := &Batcher[K, V]{run: run}
	b.r = Runner[*call[K, V]]{Run: b.runBatch, Max: max, InFlight: inFlight}
	return b
}

// Do reads k in the next batch and returns its value. ctx bounds the
// wait, not the read (the batch runs on for the other callers; run bounds
// it). Callers should not ask for one key concurrently (a singleflight
// in front): a batch holding a key twice reads it twice.
func (b *Batcher[K, V]) Do(ctx context.Context, k K) (V, error) {
	if err := ctx.Err(); err != nil { // ended already: read nothing
		var zero V
		return zero, err
	}
	c := &call[K, V]{key: k, done: make(chan struct{})}
	b.r.Add(c)
	select {
	case <-c.done:
		return c.val, c.err
	case <-ctx.Done():
		var zero V
		return zero, ctx.Err()
	}
}

func (b *Batcher[K, V]) runBatch(batch []*call[K, V]) {
	keys := make([]K, len(batch))
	for i, c := range batch {
		keys[i] = c.key
	}
	found, err := b.run(keys)
	for _, c := range batch {
		c.val, c.err = found[c.key], err
		close(c.done)
	}
}
