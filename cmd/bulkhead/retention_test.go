package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// org update --retention sets, shows and unsets an organization's
// retention, with an audit row each; a malformed one is refused before
// anything changes.
func TestOrgRetentionCLI(t *testing.T) {
	storetest.Admin(t)
	org, _, err := cli(t, "org", "create", "--name", "retention cli")
	if err != nil {
		t.Fatal(err)
	}
	org = strings.TrimSpace(org)
	before := auditRows(t, org)
	for _, c := range []struct {
		arg  string
		want any // retention_days in JSON: a number, or nil (the default)
	}{{"30d", 30.0}, {"forever", 0.0}, {"default", nil}} {
		out, _, err := cli(t, "org", "update", org, "--retention", c.arg, "--json")
		if err != nil {
			t.Fatalf("--retention %s: %v", c.arg, err)
		}
		var got map[string]any
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatal(err)
		}
		if got["retention_days"] != c.want {
			t.Errorf("--retention %s: retention_days %v, want %v", c.arg, got["retention_days"], c.want)
		}
	}
	if n := auditRows(t, org); n != before+3 {
		t.Errorf("%d audit rows after three updates, want %d", n, before+3)
	}
	if _, _, err := cli(t, "org", "update", org, "--retention", "30"); err == nil || !strings.Contains(err.Error(), "30d") {
		t.Errorf("--retention 30: %v, want an error that shows the form 30d", err)
	}
	out, _, err := cli(t, "org", "list")
	if err != nil || !strings.Contains(out, "RETENTION") {
		t.Errorf("org list: %v\n%s", err, out)
	}
}

// bulkhead migrate records BULKHEAD_RETENTION as the default, and
// bulkhead retention run applies it: rows past it go, the others stay.
func TestRetentionRunCLI(t *testing.T) {
	ownerDSN, appDSN := storetest.ScratchDatabase(t)
	cmd := func(env map[string]string, args ...string) string {
		t.Helper()
		env["BULKHEAD_ADMIN_DATABASE_URL"], env["BULKHEAD_DATABASE_URL"] = ownerDSN, appDSN
		var out, errOut bytes.Buffer
		if err := run(context.Background(), args, lookupFrom(env), &out, &errOut); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, errOut.String())
		}
		return out.String()
	}
	if out := cmd(map[string]string{"BULKHEAD_RETENTION": "30d"}, "migrate"); !strings.Contains(out, "default retention is now 30d") {
		t.Errorf("migrate with BULKHEAD_RETENTION=30d said:\n%s", out)
	}
	ctx := context.Background()
	owner, err := pgxpool.New(ctx, ownerDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	org := uuid.New()
	if _, err := owner.Exec(ctx, `INSERT INTO organizations (id, name) VALUES ($1, 'r')`, org); err != nil {
		t.Fatal(err)
	}
	for _, age := range []int{1, 20, 40} {
		if _, err := owner.Exec(ctx, `INSERT INTO prompts (organization_id, id, request_id, model, status, created_at)
			VALUES ($1, prompts_row_id(now() - make_interval(days => $2), gen_random_uuid()), 'r', 'm', 200, now() - make_interval(days => $2))`, org, age); err != nil {
			t.Fatal(err)
		}
	}
	out := cmd(map[string]string{"BULKHEAD_RETENTION": "10d"}, "retention", "run", "--json")
	var res struct {
		Default string `json:"default_retention"`
		Rows    int    `json:"rows_deleted"`
	}
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &res); err != nil {
		t.Fatalf("retention run --json: %v\n%s", err, out)
	}
	if res.Default != "10d" || res.Rows != 2 {
		t.Errorf("retention run with 10d: %+v, want default 10d and the 20 and 40 days old rows deleted", res)
	}
	var left int
	if err := owner.QueryRow(ctx, `SELECT count(*) FROM prompts WHERE organization_id = $1`, org).Scan(&left); err != nil || left != 1 {
		t.Errorf("%d rows left (%v), want 1", left, err)
	}
	if out := cmd(map[string]string{"BULKHEAD_RETENTION": "10d"}, "retention", "run"); !strings.Contains(out, "0 rows deleted") || strings.Contains(out, "is now") {
		t.Errorf("second run said:\n%s", out)
	}
}
