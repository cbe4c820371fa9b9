package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/gateway/apikey"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// cli runs a bulkhead command against the test databases and Redis.
func cli(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(context.Background(), args, lookupFrom(map[string]string{
		"BULKHEAD_ADMIN_DATABASE_URL": storetest.OwnerDSN(),
		"BULKHEAD_DATABASE_URL":       storetest.AppDSN(),
		"BULKHEAD_REDIS_URL":          storetest.RedisURL(),
	}), &out, &errOut)
	return out.String(), errOut.String(), err
}

func auditRows(t *testing.T, org string) int {
	t.Helper()
	var n int
	if err := storetest.OwnerPool(t).QueryRow(context.Background(), `SELECT count(*) FROM audit_log WHERE organization_id = $1`, org).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestKeyLifecycleCLI(t *testing.T) {
	storetest.Admin(t) // migrated, or skip/fail loudly
	org, _, err := cli(t, "org", "create", "--name", "cli")
	if err != nil {
		t.Fatal(err)
	}
	org = strings.TrimSpace(org)

	out, _, err := cli(t, "key", "create", "--org", org, "--name", "ci", "--rpm", "60", "--tpm", "5000", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var created struct {
		ID                 string `json:"id"`
		OrganizationID     string `json:"organization_id"`
		Key                string `json:"key"`
		RateLimitPerMinute int    `json:"rate_limit_per_minute"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatalf("key create --json: %v\n%s", err, out)
	}
	if created.OrganizationID != org || created.RateLimitPerMinute != 60 {
		t.Errorf("created = %+v", created)
	}
	if got, ok := apikey.Check([]byte(created.Key)); !ok || string(got) != org {
		t.Errorf("created key %q does not check out", created.Key)
	}

	list, _, err := cli(t, "key", "list", "--org", org)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(list, created.Key[40:80]) || !strings.Contains(list, created.ID) {
		t.Errorf("key list shows a secret or misses the key:\n%s", list)
	}

	before := auditRows(t, org)
	for name, args := range map[string][]string{
		"malformed org":    {"key", "create", "--org", "acme", "--name", "x", "--rpm", "1"},
		"unknown org":      {"key", "create", "--org", uuid.NewString(), "--name", "x", "--rpm", "1"},
		"negative rpm":     {"key", "create", "--org", org, "--name", "x", "--rpm", "-5"},
		"negative tpm":     {"key", "create", "--org", org, "--name", "x", "--rpm", "5", "--tpm", "-1"},
		"missing name":     {"key", "create", "--org", org, "--rpm", "5"},
		"unknown key":      {"key", "revoke", uuid.NewString()},
		"malformed key":    {"key", "revoke", "12"},
		"rotate unknown":   {"key", "rotate", uuid.NewString()},
		"negative overlap": {"key", "rotate", created.ID, "--overlap", "-1h"},
		"list unknown org": {"key", "list", "--org", uuid.NewString()},
		"delete unknown":   {"org", "delete", uuid.NewString()},
	} {
		out, _, err := cli(t, args...)
		if err == nil {
			t.Errorf("%s: accepted (%s)", name, out)
			continue
		}
		if strings.Count(err.Error(), "\n") > 0 {
			t.Errorf("%s: error is not one line: %q", name, err)
		}
	}
	if after := auditRows(t, org); after != before {
		t.Errorf("rejected commands wrote %d audit rows", after-before)
	}

	rot, _, err := cli(t, "key", "rotate", created.ID, "--overlap", "1h", "--json")
	if err != nil || !strings.Contains(rot, `"replaces": "`+created.ID) {
		t.Fatalf("rotate: %v\n%s", err, rot)
	}
	if _, _, err := cli(t, "key", "revoke", created.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cli(t, "org", "delete", org); err != nil {
		t.Fatal(err)
	}
	if n := auditRows(t, org); n != before+3 {
		t.Errorf("audit rows after rotate, revoke, delete: %d, want %d", n, before+3)
	}
}
