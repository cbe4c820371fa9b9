package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/bulkheadhq/bulkhead/store"
)

// org move: a move to schema and on to database:t1 (JSON result, the
// placement in org list), and bad input as one-line errors that change
// nothing: a malformed or unknown target, the same placement, an unknown
// organization, --resume with no move in progress, --resume with --to.
func TestOrgMoveCLI(t *testing.T) {
	run1, deleteAtEnd := placedCLI(t)
	out, errOut, err := run1("org", "create", "--name", "cli move", "--json")
	if err != nil {
		t.Fatalf("org create: %v %s", err, errOut)
	}
	var o store.Organization
	if err := json.Unmarshal([]byte(out), &o); err != nil {
		t.Fatal(err)
	}
	id := o.ID.String()
	deleteAtEnd(id)

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"org", "move", id, "--to", "database:Bad"}, "placement"},
		{[]string{"org", "move", id, "--to", "database:nowhere"}, "unknown database target"},
		{[]string{"org", "move", id, "--to", "shared"}, "already placed there"},
		{[]string{"org", "move", "2f1e0e36-4d0b-4a43-9d0e-0b5a4b0c8d11", "--to", "schema"}, "no organization"},
		{[]string{"org", "move", id, "--resume"}, "no move is in progress"},
		{[]string{"org", "move", id, "--resume", "--to", "schema"}, "--resume takes no --to"},
		{[]string{"org", "move", "not-a-uuid", "--to", "schema"}, "not an organization id"},
		{[]string{"org", "move", id}, "usage"},
	} {
		_, _, err := run1(c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: got %v, want one line with %q", c.args, err, c.want)
		}
	}
	for _, to := range []string{"schema", "database:t1"} {
		out, errOut, err := run1("org", "move", id, "--to", to, "--grace", "200ms", "--json")
		if err != nil {
			t.Fatalf("org move --to %s: %v %s", to, err, errOut)
		}
		var res store.MoveResult
		if err := json.Unmarshal([]byte(out), &res); err != nil || res.To != to {
			t.Errorf("org move --to %s: %s (%v)", to, out, err)
		}
		if !strings.Contains(errOut, "cut-over") {
			t.Errorf("org move printed no steps: %s", errOut)
		}
	}
	out, _, err = run1("org", "list", "--json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, id) || !strings.Contains(out, `"placement": "database:t1"`) {
		t.Errorf("org list after the moves: %s", out)
	}
}
