package main

import (
	"encoding/json"
	"strings"
	"testing"

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
