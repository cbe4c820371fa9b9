package gateway

import (
	"context"
	"net"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// N requests go through the gateway while PostgreSQL becomes unreachable
// for the request log and comes back mid-run: afterwards exactly N rows
// exist, each under its tenant, none twice.
func TestRequestLogSurvivesPostgresOutage(t *testing.T) {
	h := newHarness(t, nil)
	orgA, keyA, _ := h.tenant(1_000_000)
	orgB, keyB, _ := h.tenant(1_000_000)

	u, err := url.Parse(storetest.AppDSN())
	if err != nil {
		t.Fatal(err)
	}
	proxy := storetest.NewFaultProxy(t, u.Host)
	u.Host = proxy.Addr()
	logStore, err := store.Open(context.Background(), u.String(), store.Options{Lazy: true, MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer logStore.Close()
	writer, err := store.NewWriter(logStore, store.WriterOptions{SpoolDir: t.TempDir(), FlushInterval: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stopWriter := context.WithCancel(context.Background())
	writerDone := make(chan error, 1)
	go func() { writerDone <- writer.Run(wctx) }()

	srv, err := New(h.cfg, zap.NewNop(), Deps{Auth: h.auth, Recorder: writer})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln) //nolint:errcheck // shut down below
	addr := ln.Addr().String()
	gw := &harness{t: t, url: "http://" + addr, client: &fasthttp.HostClient{Addr: addr, Dial: loopback{t}.dial}}
	t.Cleanup(gw.client.CloseIdleConnections)

	const n = 300
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range n {
		if i == n/3 {
			proxy.Cut("refuse")
		}
		if i == 2*n/3 {
			proxy.Restore()
		}
		key := keyA
		if i%2 == 1 {
			key = keyB
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			body := chatBody
			if i%3 == 0 {
				body = `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`
			}
			r := gw.do("POST", "/v1/chat/completions", body, "Authorization", "Bearer "+key, "X-Request-Id", "dur-"+strconv.Itoa(i))
			if r.status != 200 {
				t.Errorf("request %d: %d %s", i, r.status, r.body)
			}
		}()
		time.Sleep(5 * time.Millisecond)
	}
	wg.Wait()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	// PostgreSQL is back: the writer replays the spool on its own.
	deadline := time.Now().Add(20 * time.Second)
	for st := writer.Stats(); st.Replaying || st.QueueDepth > 0 || st.SpoolBytes > 0; st = writer.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("the writer did not catch up: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopWriter()
	if err := <-writerDone; err != nil {
		t.Fatalf("writer: %v", err)
	}

	owner := storetest.OwnerPool(t)
	count := func(org any) (rows, distinct int) {
		err := owner.QueryRow(context.Background(), `SELECT count(*), count(DISTINCT request_id) FROM prompts
			WHERE organization_id = $1 AND request_id LIKE 'dur-%'`, org).Scan(&rows, &distinct)
		if err != nil {
			t.Fatal(err)
		}
		return rows, distinct
	}
	ra, da := count(orgA)
	rb, db := count(orgB)
	st := writer.Stats()
	t.Logf("writer: written %d, spooled %d, replayed %d, dead letters %d, lost %d", st.Written, st.Spooled, st.Replayed, st.DeadLetters, st.Lost)
	if ra+rb != n || ra != da || rb != db || ra != n/2 {
		t.Errorf("rows: A %d (%d distinct), B %d (%d distinct); want %d each, %d in all", ra, da, rb, db, n/2, n)
	}
	if st.Spooled == 0 {
		t.Error("nothing was spooled: the outage did not happen during the run")
	}
}
