package batch

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// Callers that arrive while a batch runs share the next one, batches hold
// at most max keys, each caller gets its own key's value, and a batch's
// error reaches each of its callers.
func TestBatches(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var sizes []int
	first := true
	b := New(func(keys []int) (map[int]string, error) {
		mu.Lock()
		sizes = append(sizes, len(keys))
		wait := first
		first = false
		mu.Unlock()
		if wait {
			<-release // hold the first batch until the others queue
		}
		out := map[int]string{}
		for _, k := range keys {
			if k < 0 {
				return nil, errors.New("negative key")
			}
			if k%2 == 0 {
				out[k] = string(rune('a' + k))
			}
		}
		return out, nil
	}, 4, 1)

	ctx := context.Background()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if v, err := b.Do(ctx, 0); v != "a" || err != nil {
			t.Errorf("key 0: %q, %v", v, err)
		}
	}()
	for { // the first batch runs, holding key 0
		mu.Lock()
		n := len(sizes)
		mu.Unlock()
		if n == 1 {
			break
		}
	}
	var wg sync.WaitGroup
	for k := 1; k <= 9; k++ {
		wg.Go(func() {
			v, err := b.Do(ctx, k)
			want := ""
			if k%2 == 0 {
				want = string(rune('a' + k))
			}
			if v != want || err != nil {
				t.Errorf("key %d: %q, %v; want %q", k, v, err, want)
			}
		})
	}
	for b.queued() < 9 {
	}
	close(release)
	wg.Wait()
	<-done
	mu.Lock()
	if len(sizes) != 4 || sizes[0] != 1 || sizes[1] != 4 || sizes[2] != 4 || sizes[3] != 1 {
		t.Errorf("batch sizes %v, want [1 4 4 1]", sizes)
	}
	mu.Unlock()

	if _, err := b.Do(ctx, -1); err == nil {
		t.Error("a failed batch's caller got no error")
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.Do(cancelled, 2); !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled wait: %v", err)
	}
}

// queued is the number of keys waiting for a batch.
func (b *Batcher[K, V]) queued() int { return b.r.Queued() }

// While a batch runs, a second starts beside it only when a whole batch
// waits or the running one has run for Slow; every item runs once.
func TestRunnerSecondBatch(t *testing.T) {
	for _, tc := range []struct {
		name       string
		slow       time.Duration
		waiting    int
		wantSecond bool
	}{
		{"a few items wait behind a batch that is not slow", time.Hour, 2, false},
		{"a whole batch waits", time.Hour, 4, true},
		{"the running batch turns slow", 20 * time.Millisecond, 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			started := make(chan []int, 10)
			r := &Runner[int]{Max: 4, InFlight: 2, Slow: tc.slow, Run: func(b []int) {
				started <- b
				if b[0] == 0 {
					<-release // the first batch is held
				}
			}}
			r.Add(0)
			ran := map[int]int{}
			for _, i := range <-started {
				ran[i]++
			}
			for i := 1; i <= tc.waiting; i++ {
				r.Add(i)
			}
			wait := 100 * time.Millisecond // to see that nothing starts
			if tc.wantSecond {
				wait = 10 * time.Second
			}
			select {
			case b := <-started:
				if !tc.wantSecond {
					t.Errorf("a batch %v started beside one that is not slow", b)
				}
				for _, i := range b {
					ran[i]++
				}
			case <-time.After(wait):
				if tc.wantSecond {
					t.Error("no second batch started beside the held one")
				}
			}
			close(release)
			for deadline := time.After(10 * time.Second); len(ran) < tc.waiting+1; {
				select {
				case b := <-started:
					for _, i := range b {
						ran[i]++
					}
				case <-deadline:
					t.Fatalf("items run: %v, want 0 to %d", ran, tc.waiting)
				}
			}
			for i, n := range ran {
				if n != 1 {
					t.Errorf("item %d ran %d times", i, n)
				}
			}
		})
	}
}
