package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bulkheadhq/bulkhead/cmd/mockllm/mock"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// The gateway with BULKHEAD_DATABASE_URL naming a PgBouncer in transaction
// mode (two server connections, eight client connections) and
// BULKHEAD_DATABASE_PREPARED_STATEMENTS=false, as deploy/README.md tells:
// key look-ups (no Redis, so every first use reaches PostgreSQL), the
// request log and the read API all work, and each tenant reads its own
// rows only.
func TestGatewayThroughPgBouncer(t *testing.T) {
	storetest.Admin(t) // migrated, or skip/fail loudly
	dsn := storetest.PgBouncer(t, storetest.AppDSN(), 2)
	const tenants, perTenant = 2, 20
	var orgs, keys [tenants]string
	for i := range tenants {
		orgs[i], keys[i] = cliTenant(t, "pgbouncer")
	}
	listen, admin := freeAddr(t), freeAddr(t)
	gw := startGateway(t, map[string]string{
		"BULKHEAD_LISTEN":                       listen,
		"BULKHEAD_ADMIN_LISTEN":                 admin,
		"BULKHEAD_DATABASE_URL":                 dsn,
		"BULKHEAD_DATABASE_PREPARED_STATEMENTS": "false",
		"BULKHEAD_DATABASE_MAX_CONNS":           "8",
		"BULKHEAD_ADMIN_DATABASE_URL":           storetest.OwnerDSN(),
		"BULKHEAD_REDIS_URL":                    "",
		"BULKHEAD_UPSTREAM_URL":                 mockUpstream(t, mock.Options{}),
		"BULKHEAD_SPOOL_DIR":                    t.TempDir(),
		"BULKHEAD_LOG_LEVEL":                    "warn",
	})
	defer func() {
		gw.Process.Signal(syscall.SIGTERM) //nolint:errcheck // the test is over
		gw.Wait()                          //nolint:errcheck // its exit status does not matter here
	}()

	client := &http.Client{Timeout: 10 * time.Second}
	do := func(method, key, path, body string) (int, []byte, error) {
		req, err := http.NewRequest(method, "http://"+listen+path, strings.NewReader(body))
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("Authorization", "Bearer "+key)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, b, err
	}

	// Requests of both tenants at once, from eight clients.
	var wg sync.WaitGroup
	errs := make(chan error, tenants*perTenant)
	for c := range 8 {
		wg.Go(func() {
			for n := c; n < tenants*perTenant; n += 8 {
				body := fmt.Sprintf(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello %d"}]}`, n)
				code, b, err := do("POST", keys[n%tenants], "/v1/chat/completions", body)
				if err != nil || code != 200 {
					errs <- fmt.Errorf("request %d: %d %s %v", n, code, b, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}

	// The request log, through the read API: each tenant's page holds its
	// own rows once the writer has them.
	type page struct {
		Data []struct {
			ID     string `json:"id"`
			Model  string `json:"model"`
			Status int    `json:"status"`
		} `json:"data"`
	}
	pages := make([]page, tenants)
	deadline := time.Now().Add(30 * time.Second)
	for i := range tenants {
		for {
			code, b, err := do("GET", keys[i], "/api/v1/prompts?limit=100", "")
			if err != nil || code != 200 {
				t.Fatalf("tenant %d: GET /api/v1/prompts: %d %s %v", i, code, b, err)
			}
			pages[i] = page{}
			if err := json.Unmarshal(b, &pages[i]); err != nil {
				t.Fatalf("tenant %d: %v: %s", i, err, b)
			}
			if len(pages[i].Data) >= perTenant || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if len(pages[i].Data) != perTenant {
			t.Fatalf("tenant %d lists %d rows, want %d", i, len(pages[i].Data), perTenant)
		}
	}
	var inTable [tenants]int
	for i := range tenants {
		if err := storetest.OwnerPool(t).QueryRow(context.Background(),
			`SELECT count(*) FROM prompts WHERE organization_id = $1`, orgs[i]).Scan(&inTable[i]); err != nil {
			t.Fatal(err)
		}
		if inTable[i] != perTenant {
			t.Errorf("tenant %d has %d rows in the table, want %d", i, inTable[i], perTenant)
		}
	}
	for i := range tenants {
		mine, theirs := pages[i].Data[0].ID, pages[(i+1)%tenants].Data[0].ID
		if code, b, err := do("GET", keys[i], "/api/v1/prompts/"+mine, ""); err != nil || code != 200 || !strings.Contains(string(b), mine) {
			t.Errorf("tenant %d: GET its own prompt: %d %s %v", i, code, b, err)
		}
		if code, b, err := do("GET", keys[i], "/api/v1/prompts/"+theirs, ""); err != nil || code != 404 {
			t.Errorf("tenant %d: GET the other tenant's prompt: %d %s %v, want 404", i, code, b, err)
		}
		code, b, err := do("GET", keys[i], "/api/v1/usage?group_by=model", "")
		if err != nil || code != 200 {
			t.Fatalf("tenant %d: GET /api/v1/usage: %d %s %v", i, code, b, err)
		}
		var u struct {
			Data []struct {
				Group    string `json:"group"`
				Requests int    `json:"requests"`
			} `json:"data"`
		}
		if err := json.Unmarshal(b, &u); err != nil || len(u.Data) != 1 || u.Data[0].Requests != perTenant {
			t.Errorf("tenant %d: usage %s (%v), want %d requests of one model", i, b, err, perTenant)
		}
	}
}
