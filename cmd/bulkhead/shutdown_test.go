package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bulkheadhq/bulkhead/cmd/mockllm/mock"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// THREATS 54: `bulkhead serve` on SIGTERM with streams open: not ready at
// once; new connections still served through the grace period, refused
// after it; the open streams run until the drain deadline, then end with
// an error event; the request log is flushed after they are cut; exit 0.
func TestServeSIGTERM(t *testing.T) {
	storetest.Admin(t) // migrated, or skip/fail loudly
	org, key := cliTenant(t, "sigterm")
	// Streams of about 10 s: longer than grace and drain together.
	upstream := mockUpstream(t, mock.Options{Chunks: 50, ChunkDelay: 200 * time.Millisecond})
	listen, admin := freeAddr(t), freeAddr(t)
	gw := startGateway(t, map[string]string{
		"BULKHEAD_LISTEN":             listen,
		"BULKHEAD_ADMIN_LISTEN":       admin,
		"BULKHEAD_DATABASE_URL":       storetest.AppDSN(),
		"BULKHEAD_ADMIN_DATABASE_URL": storetest.OwnerDSN(),
		"BULKHEAD_REDIS_URL":          "",
		"BULKHEAD_UPSTREAM_URL":       upstream,
		"BULKHEAD_SPOOL_DIR":          t.TempDir(),
		"BULKHEAD_SHUTDOWN_GRACE":     "1500ms",
		"BULKHEAD_SHUTDOWN_TIMEOUT":   "1500ms",
		"BULKHEAD_LOG_LEVEL":          "warn",
	})
	exited := make(chan error, 1)

	post := func(id, body string) (*http.Response, error) {
		req, _ := http.NewRequest("POST", "http://"+listen+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("X-Request-Id", id)
		// A connection of its own: what is refused is new connections.
		return (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}).Do(req)
	}
	run := "sigterm-" + org[:8]
	const streams = 4
	ends := make(chan string, streams)
	for i := range streams {
		resp, err := post(fmt.Sprintf("%s-stream-%d", run, i), `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("stream %d: %v %v", i, resp, err)
		}
		sc := bufio.NewScanner(resp.Body)
		if !sc.Scan() {
			t.Fatalf("stream %d: no first event", i)
		}
		go func() {
			defer resp.Body.Close()
			last := ""
			for sc.Scan() {
				if line := sc.Text(); line != "" {
					last = line
				}
			}
			ends <- last
		}()
	}

	if err := gw.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	go func() { exited <- gw.Wait() }()
	sent := time.Now()

	// Not ready at once.
	ready := func() int {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for ready() != 503 {
		if time.Since(sent) > time.Second {
			t.Fatal("still ready a second after SIGTERM")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Within the grace period a new connection is served.
	resp, err := post(run+"-in-grace", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("request during the grace period: %v %v", resp, err)
	}
	resp.Body.Close()
	if time.Since(sent) > 1500*time.Millisecond {
		t.Logf("the in-grace request ended %v after SIGTERM, past the grace period: the machine is slow", time.Since(sent))
	}
	// After it, new connections are refused.
	for {
		c, err := net.DialTimeout("tcp", listen, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Since(sent) > 10*time.Second {
			t.Fatal("still accepting connections 10 s after SIGTERM (grace 1.5 s)")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The streams are cut at the drain deadline, with an error event.
	for range streams {
		select {
		case last := <-ends:
			if !strings.Contains(last, `"code":"service_unavailable"`) {
				t.Errorf("a cut stream ended with %q, want the shutdown error event", last)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("a stream was not cut at the drain deadline")
		}
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("serve exited with %v, want status 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not exit")
	}
	// Every request has its row: the cut streams with 503, after the flush.
	owner := storetest.OwnerPool(t)
	rows, err := owner.Query(context.Background(), `SELECT request_id, status FROM prompts
		WHERE organization_id = $1 AND request_id LIKE $2 || '%'`, org, run)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for rows.Next() {
		var id string
		var status int
		if err := rows.Scan(&id, &status); err != nil {
			t.Fatal(err)
		}
		got[id] = status
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if got[run+"-in-grace"] != 200 {
		t.Errorf("in-grace request: status %d in the log, want 200", got[run+"-in-grace"])
	}
	for i := range streams {
		if s := got[fmt.Sprintf("%s-stream-%d", run, i)]; s != 503 {
			t.Errorf("stream %d: status %d in the log, want 503 (cut at shutdown)", i, s)
		}
	}
	if len(got) != streams+1 {
		t.Errorf("%d rows, want %d: %v", len(got), streams+1, got)
	}
}
