// Package batch gathers concurrent callers' look-ups into batches, the
// way gateway/auth batches key look-ups: there is no collection window.
// A look-up that finds fewer than InFlight batches running starts one at
// once; those that arrive while batches run wait for the next one, so an
// idle gateway adds no latency and a busy one sends fewer, larger batches
// (natural batching). It serves the first read of an organization's
// model catalog and budget list (one PostgreSQL transaction for many
// organizations, store.CatalogsFor and store.BudgetsForOrgs).
package batch

import (
	"context"
	"sync"
)

// Defaults of New.
const (
	// DefaultInFlight bounds the batches running at once, and so the
	// pool connections they hold.
	DefaultInFlight = 2
	// DefaultMax bounds the keys of one batch.
	DefaultMax = 128
)

// Func reads a batch of distinct keys: a value for each key found (a key
// absent from the map is the zero value), or an error for the whole
// batch. It is called with at most Max keys, from at most InFlight
// goroutines at once.
type Func[K comparable, V any] func(keys []K) (map[K]V, error)

// Batcher batches look-ups of K. It is safe for concurrent use.
type Batcher[K comparable, V any] struct {
	run           Func[K, V]
	max, inFlight int

	mu      sync.Mutex
	queue   []*call[K, V]
	running int
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
	if max <= 0 {
		max = DefaultMax
	}
	if inFlight <= 0 {
		inFlight = DefaultInFlight
	}
	return &Batcher[K, V]{run: run, max: max, inFlight: inFlight}
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
	b.mu.Lock()
	b.queue = append(b.queue, c)
	start := b.running < b.inFlight
	if start {
		b.running++
	}
	b.mu.Unlock()
	if start {
		go b.drain()
	}
	select {
	case <-c.done:
		return c.val, c.err
	case <-ctx.Done():
		var zero V
		return zero, ctx.Err()
	}
}

// drain runs batches until the queue is empty.
func (b *Batcher[K, V]) drain() {
	for {
		b.mu.Lock()
		n := min(len(b.queue), b.max)
		if n == 0 {
			b.queue = nil // let a burst's backing array go
			b.running--
			b.mu.Unlock()
			return
		}
		batch := make([]*call[K, V], n)
		copy(batch, b.queue)
		b.queue = b.queue[n:]
		b.mu.Unlock()
		keys := make([]K, n)
		for i, c := range batch {
			keys[i] = c.key
		}
		found, err := b.run(keys)
		for _, c := range batch {
			c.val, c.err = found[c.key], err
			close(c.done)
		}
	}
}
