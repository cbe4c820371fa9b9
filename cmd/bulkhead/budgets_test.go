package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/bulkheadhq/bulkhead/store/storetest"
)

func budgetRows(t *testing.T, org string) (budgets, audits int) {
	t.Helper()
	err := storetest.OwnerPool(t).QueryRow(context.Background(), `SELECT (SELECT count(*) FROM budgets WHERE organization_id = $1),
		(SELECT count(*) FROM audit_log WHERE organization_id = $1 AND action LIKE 'budget.%')`, org).Scan(&budgets, &audits)
	if err != nil {
		t.Fatal(err)
	}
	return budgets, audits
}

// bulkhead budget set|list|remove, with bad input refused in one line and
// nothing written.
func TestBudgetCLI(t *testing.T) {
	storetest.Admin(t)
	org, _, err := cli(t, "org", "create", "--name", "cli budgets")
	if err != nil {
		t.Fatal(err)
	}
	org = strings.TrimSpace(org)
	out, _, err := cli(t, "budget", "set", "--org", org, "--usd", "25.50", "--window", "month", "--alert-at", "0.8,1.0", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var b struct {
		ID      string `json:"id"`
		Limit   string `json:"limit_usd"`
		Window  string `json:"window"`
		AlertAt []int  `json:"alert_at_permille"`
	}
	if err := json.Unmarshal([]byte(out), &b); err != nil || b.Limit != "25.5" || b.Window != "month" || len(b.AlertAt) != 2 || b.AlertAt[0] != 800 {
		t.Fatalf("budget set --json: %s (%v)", out, err)
	}
	if _, _, err := cli(t, "budget", "set", "--org", org, "--user", "alice", "--usd", "1", "--window", "rolling:24h"); err != nil {
		t.Fatal(err)
	}
	for name, args := range map[string][]string{
		"zero":           {"--org", org, "--usd", "0", "--window", "day"},
		"negative":       {"--org", org, "--usd", "-1", "--window", "day"},
		"absurd":         {"--org", org, "--usd", "99999999999", "--window", "day"},
		"bad window":     {"--org", org, "--usd", "1", "--window", "week"},
		"bad rolling":    {"--org", org, "--usd", "1", "--window", "rolling:5s"},
		"bad alert":      {"--org", org, "--usd", "1", "--window", "day", "--alert-at", "0.8,abc"},
		"no org":         {"--usd", "1", "--window", "day"},
		"unknown org":    {"--org", "00000000-0000-0000-0000-000000000001", "--usd", "1", "--window", "day"},
		"unknown key":    {"--org", org, "--key", "00000000-0000-0000-0000-000000000001", "--usd", "1", "--window", "day"},
		"missing window": {"--org", org, "--usd", "1"},
	} {
		_, stderr, err := cli(t, append([]string{"budget", "set"}, args...)...)
		if err == nil || strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
			t.Errorf("%s: err %v, stderr %q; want a one-line error", name, err, stderr)
		}
	}
	if n, audits := budgetRows(t, org); n != 2 || audits != 2 {
		t.Errorf("%d budgets, %d audit rows; want 2 and 2", n, audits)
	}
	out, _, err = cli(t, "budget", "list", "--org", org, "--json")
	if err != nil || strings.Count(out, `"id"`) != 2 {
		t.Errorf("budget list: %s %v", out, err)
	}
	if _, _, err := cli(t, "budget", "remove", "--org", org, "--user", "alice"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cli(t, "budget", "remove", "--org", org, "--user", "alice"); err == nil {
		t.Errorf("removing twice succeeded")
	}
	if n, audits := budgetRows(t, org); n != 1 || audits != 3 {
		t.Errorf("%d budgets, %d audit rows after remove; want 1 and 3", n, audits)
	}
}
