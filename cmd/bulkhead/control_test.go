package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// `bulkhead control` serves the control plane alone: an operator token
// from `admin-token create` logs in and lists organizations, a revoked one
// is refused, an organization admin key from `org-admin-key create`
// reaches its organization only, and the command returns nil once its
// context ends.
func TestControlCommand(t *testing.T) {
	storetest.Admin(t) // migrated, or skip/fail loudly
	out, _, err := cli(t, "admin-token", "create", "--name", "control command", "--scope", "read", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var tok struct{ ID, Token, Scope string }
	if err := json.Unmarshal([]byte(out), &tok); err != nil || tok.Scope != "read" {
		t.Fatalf("admin-token create --json: %q (%v)", out, err)
	}
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"control"}, lookupFrom(map[string]string{
			"BULKHEAD_CONTROL_LISTEN":     addr,
			"BULKHEAD_ADMIN_DATABASE_URL": storetest.OwnerDSN(),
			"BULKHEAD_DATABASE_URL":       storetest.AppDSN(),
			"BULKHEAD_REDIS_URL":          "",
			"BULKHEAD_LOG_LEVEL":          "error",
		}), new(bytes.Buffer), new(bytes.Buffer))
	}()
	get := func(token string) int {
		req, _ := http.NewRequest("GET", "http://"+addr+"/admin/v1/organizations?limit=1", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	deadline := time.Now().Add(10 * time.Second)
	for get(tok.Token) != 200 {
		if time.Now().After(deadline) {
			t.Fatal("bulkhead control did not answer an operator's GET with 200 within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	out, _, err = cli(t, "admin-token", "list")
	if err != nil || !strings.Contains(out, tok.ID) || strings.Contains(out, tok.Token) {
		t.Errorf("admin-token list: %v\n%s\nwant the token's id, never the token", err, out)
	}
	if _, _, err := cli(t, "admin-token", "revoke", tok.ID); err != nil {
		t.Fatal(err)
	}
	if st := get(tok.Token); st != 401 {
		t.Errorf("a revoked token: %d, want 401", st)
	}
	// An organization admin key from `org-admin-key create` administers its
	// organization only, until `org-admin-key revoke`.
	adm := storetest.Admin(t)
	a, _ := adm.CreateOrg(context.Background(), "control command a")
	b, _ := adm.CreateOrg(context.Background(), "control command b")
	out, _, err = cli(t, "org-admin-key", "create", "--org", b.ID.String(), "--name", "b's backend", "--json")
	var ak struct{ ID, Key string }
	if err != nil || json.Unmarshal([]byte(out), &ak) != nil || !strings.HasPrefix(ak.Key, "bhk_") {
		t.Fatalf("org-admin-key create --json: %q (%v)", out, err)
	}
	getOrg := func(org, cred string) int {
		req, _ := http.NewRequest("GET", "http://"+addr+"/admin/v1/organizations/"+org, nil)
		req.Header.Set("Authorization", "Bearer "+cred)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if gb, ga := getOrg(b.ID.String(), ak.Key), getOrg(a.ID.String(), ak.Key); gb != 200 || ga != 404 {
		t.Errorf("B's admin key: its own organization %d, A's %d; want 200 and 404", gb, ga)
	}
	out, _, err = cli(t, "org-admin-key", "list", "--org", b.ID.String())
	if err != nil || !strings.Contains(out, ak.ID) || strings.Contains(out, ak.Key[20:]) {
		t.Errorf("org-admin-key list: %v\n%s\nwant the key's id, never the key", err, out)
	}
	if _, _, err := cli(t, "org-admin-key", "revoke", ak.ID); err != nil {
		t.Fatal(err)
	}
	if st := getOrg(b.ID.String(), ak.Key); st != 401 {
		t.Errorf("a revoked admin key: %d, want 401", st)
	}
	if _, _, err := cli(t, "admin-token", "create", "--name", "x", "--scope", "admin"); err == nil || !strings.Contains(err.Error(), "--scope") {
		t.Errorf("admin-token create --scope admin: %v, want an error naming --scope", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("bulkhead control returned %v after its context ended, want nil", err)
	}
}
