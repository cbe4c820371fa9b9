package gateway

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/bulkheadhq/bulkhead/cmd/mockllm/mock"
	"github.com/bulkheadhq/bulkhead/config"
)

// Shutdown with open streams: in-flight streams run until the drain
// deadline, are then cut with an error event, and every one is recorded.
func TestShutdownCutsStreamsAndRecordsThem(t *testing.T) {
	h := newFakeHarnessWith(t, nil, mock.Options{ChunkDelay: 50 * time.Millisecond, Chunks: 100}, nil) // 5s streams
	_, key, _ := h.tenant(1_000_000)
	client := h.httpClient()
	const n = 20
	var wg sync.WaitGroup
	flowing := make(chan struct{}, n)
	lasts := make([]string, n)
	statuses := make([]int, n)
	for i := range n {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", h.url+"/v1/chat/completions",
				strings.NewReader(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
			req.Header.Set("Authorization", "Bearer "+key)
			req.Header.Set("X-Request-Id", "shutdown-"+strconv.Itoa(i))
			resp, err := client.Do(req)
			if err != nil {
				t.Errorf("stream %d: %v", i, err)
				flowing <- struct{}{}
				return
			}
			defer resp.Body.Close()
			statuses[i] = resp.StatusCode
			sc := bufio.NewScanner(resp.Body)
			first := true
			for sc.Scan() {
				if first {
					first = false
					flowing <- struct{}{} // the stream's first event arrived
				}
				if line := sc.Text(); line != "" {
					lasts[i] = line
				}
			}
			if first {
				flowing <- struct{}{}
			}
		})
	}
	for range n {
		<-flowing
	}
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
	for i := range n {
		rec := h.rec.find(t, "shutdown-"+strconv.Itoa(i))
		if statuses[i] != 200 || !strings.Contains(lasts[i], `"code":"service_unavailable"`) ||
			rec.Status != 503 || rec.Response == "" || rec.UsageSource != "estimated" {
			t.Errorf("stream %d: caller %d ending %q, record %+v", i, statuses[i], lasts[i], rec)
		}
	}
}

// Shutdown closes the gateway's idle connections to its upstreams: they
// do not stay open until they have been idle for 30s.
func TestShutdownClosesUpstreamConnections(t *testing.T) {
	n := newMemNet(t)
	ln, addr := n.listener()
	up := &fasthttp.Server{Handler: func(rc *fasthttp.RequestCtx) {
		rc.SetContentType("application/json")
		rc.SetBodyString(okChat)
	}, Logger: testLogger{t}}
	served := make(chan error, 1)
	go func() { served <- up.Serve(ln) }()
	t.Cleanup(func() {
		up.Shutdown() //nolint:errcheck // test teardown
		<-served
	})
	h := newFakeHarness(t, n, func(cfg *config.Config) { cfg.UpstreamURL = "http://" + addr + "/v1" })
	_, key, _ := h.tenant(1000)
	if r := h.do("POST", "/v1/chat/completions", chatBody, bearer(key)...); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if up.GetOpenConnectionsCount() == 0 {
		t.Fatal("the upstream has no connection: the request's was not kept alive")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Second); up.GetOpenConnectionsCount() > 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("a second after Shutdown the upstream still has %d connections", up.GetOpenConnectionsCount())
		}
	}
}
