package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bulkheadhq/bulkhead/cmd/mockllm/mock"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// THREATS 58 (issue 13, point 1): a gateway killed with SIGKILL under load,
// restarted on the same spool directory, has exactly one row for every
// request whose answer a client received in full: a 200 with its whole
// JSON body, or a stream up to "data: [DONE]".
func TestAnsweredRequestsSurviveSIGKILL(t *testing.T) {
	storetest.Admin(t) // migrated, or skip/fail loudly
	ctx := context.Background()
	const tenants = 4
	keys := make([]string, tenants)
	orgs := make([]string, tenants)
	for i := range tenants {
		orgs[i], keys[i] = cliTenant(t, "crash")
	}

	upstream := mockUpstream(t, mock.Options{Chunks: 8})

	listen := freeAddr(t)
	env := map[string]string{
		"BULKHEAD_LISTEN":             listen,
		"BULKHEAD_ADMIN_LISTEN":       freeAddr(t),
		"BULKHEAD_DATABASE_URL":       storetest.AppDSN(),
		"BULKHEAD_ADMIN_DATABASE_URL": storetest.OwnerDSN(),
		"BULKHEAD_REDIS_URL":          "",
		"BULKHEAD_UPSTREAM_URL":       upstream,
		"BULKHEAD_SPOOL_DIR":          t.TempDir(),
		"BULKHEAD_SPOOL_FSYNC":        "never", // a process crash: the write alone must do
		"BULKHEAD_LOG_LEVEL":          "warn",
	}
	gw := startGateway(t, env)

	// Clients send until the kill, each request with its own id; an id is
	// kept only once its answer arrived whole.
	var (
		mu       sync.Mutex
		answered []string
		seq      atomic.Int64
		stop     atomic.Bool
		wg       sync.WaitGroup
	)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	for c := range 16 {
		wg.Go(func() {
			for !stop.Load() {
				n := seq.Add(1)
				id := fmt.Sprintf("crash-%s-%d", orgs[0][:8], n)
				stream := n%2 == 0
				body := fmt.Sprintf(`{"model":"gpt-4o-mini","stream":%t,"messages":[{"role":"user","content":"hello %d"}]}`, stream, n)
				req, _ := http.NewRequest("POST", "http://"+listen+"/v1/chat/completions", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+keys[c%tenants])
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Request-Id", id)
				if complete(client, req, stream) {
					mu.Lock()
					answered = append(answered, id)
					mu.Unlock()
				}
			}
		})
	}
	// Kill once the load is in full swing.
	for seq.Load() < 1500 {
		time.Sleep(10 * time.Millisecond)
	}
	if err := gw.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	gw.Wait() //nolint:errcheck // killed
	stop.Store(true)
	wg.Wait()
	t.Logf("%d requests sent, %d answered in full before the kill", seq.Load(), len(answered))
	if len(answered) < 1000 {
		t.Fatalf("only %d answers before the kill", len(answered))
	}

	// The same spool, a new process: it replays what the journal held.
	gw = startGateway(t, env)
	defer func() {
		gw.Process.Signal(syscall.SIGTERM) //nolint:errcheck // the test is over
		gw.Wait()                          //nolint:errcheck // its exit status does not matter here
	}()
	owner := storetest.OwnerPool(t)
	counts := map[string]int{}
	deadline := time.Now().Add(30 * time.Second)
	for {
		rows, err := owner.Query(ctx, `SELECT request_id, count(*) FROM prompts
			WHERE organization_id = ANY($1::uuid[]) AND request_id LIKE 'crash-%' GROUP BY request_id`, orgs)
		if err != nil {
			t.Fatal(err)
		}
		clear(counts)
		for rows.Next() {
			var id string
			var n int
			if err := rows.Scan(&id, &n); err != nil {
				t.Fatal(err)
			}
			counts[id] = n
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		missing := 0
		for _, id := range answered {
			if counts[id] == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d answered requests have no row after the restart", missing, len(answered))
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, id := range answered {
		if counts[id] != 1 {
			t.Errorf("request %s has %d rows, want 1", id, counts[id])
		}
	}
}

// complete sends req and reports whether the whole answer arrived: a 200
// with a JSON completion, or a 200 stream through "data: [DONE]".
func complete(client *http.Client, req *http.Request, stream bool) bool {
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return false
	}
	if !stream {
		var v struct {
			Choices []json.RawMessage `json:"choices"`
		}
		return json.NewDecoder(resp.Body).Decode(&v) == nil && len(v.Choices) > 0
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if sc.Text() == "data: [DONE]" {
			return true
		}
	}
	return false
}
