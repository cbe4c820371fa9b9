package gateway

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/bulkheadhq/bulkhead/cmd/mockllm/mock"
)

// Shutdown with open streams: in-flight streams run until the drain
// deadline, are then cut with an error event, and every one is recorded.
func TestShutdownCutsStreamsAndRecordsThem(t *testing.T) {
	h := newHarnessWith(t, mock.Options{ChunkDelay: 50 * time.Millisecond, Chunks: 100}, nil) // 5s streams
	_, key, _ := h.tenant(1_000_000)
	const n = 20
	var wg sync.WaitGroup
	replies := make([]reply, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies[i] = h.do("POST", "/v1/chat/completions", `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
				"Authorization", "Bearer "+key, "X-Request-Id", "shutdown-"+strconv.Itoa(i))
		}()
	}
	time.Sleep(500 * time.Millisecond) // the streams are flowing
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := h.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Shutdown took %s with a 300ms drain deadline", took)
	}
	wg.Wait()
	for i, r := range replies {
		rec := h.rec.find(t, "shutdown-"+strconv.Itoa(i))
		if r.status != 200 || rec.Status != 503 || rec.Response == "" || rec.UsageSource != "estimated" {
			t.Errorf("stream %d: caller %d, record %+v", i, r.status, rec)
		}
	}
}
