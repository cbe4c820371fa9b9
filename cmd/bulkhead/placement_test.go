package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// The placement commands: org create --placement (schema, database:t1,
// shared by default) with "placement" in its JSON and in org list --json;
// bad placements and unknown targets as one-line errors that create
// nothing; migrate status listing every place at the latest version.
func TestPlacementCLI(t *testing.T) {
	run1, deleteAtEnd := placedCLI(t)
	created := map[string]string{}
	for _, p := range []string{"", "schema", "database:t1"} {
		args := []string{"org", "create", "--name", "cli placed", "--json"}
		if p != "" {
			args = append(args, "--placement", p)
		}
		out, errOut, err := run1(args...)
		if err != nil {
			t.Fatalf("org create --placement %q: %v %s", p, err, errOut)
		}
		var o store.Organization
		if err := json.Unmarshal([]byte(out), &o); err != nil {
			t.Fatal(err)
		}
		want := p
		if want == "" {
			want = "shared"
		}
		if o.Placement != want || !strings.Contains(out, `"placement": "`+want+`"`) {
			t.Errorf("org create --placement %q: %s", p, out)
		}
		created[o.ID.String()] = want
		deleteAtEnd(o.ID.String())
	}
	out, _, err := run1("org", "list", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var orgs []store.Organization
	if err := json.Unmarshal([]byte(out), &orgs); err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, o := range orgs {
		if want, ok := created[o.ID.String()]; ok {
			found++
			if o.Placement != want {
				t.Errorf("org list: %s placement %q, want %q", o.ID, o.Placement, want)
			}
		}
	}
	if found != len(created) {
		t.Errorf("org list --json shows %d of the %d organizations", found, len(created))
	}

	for _, bad := range []struct{ placement, says string }{
		{"database:nope", `unknown database target "nope"`},
		{"bogus", `placement "bogus"`},
		{"database:Bad-Name", "placement"},
	} {
		name := "cli bad " + bad.placement
		_, errOut, err := run1("org", "create", "--name", name, "--placement", bad.placement)
		if err == nil || !strings.Contains(err.Error()+errOut, bad.says) || strings.Count(strings.TrimSpace(err.Error()), "\n") > 0 {
			t.Errorf("org create --placement %s: err = %v %s; want one line saying %s", bad.placement, err, errOut, bad.says)
		}
		var n int
		storetest.OwnerPool(t).QueryRow(context.Background(), `SELECT count(*) FROM organizations WHERE name = $1`, name).Scan(&n)
		if n != 0 {
			t.Errorf("org create --placement %s created %d organizations", bad.placement, n)
		}
	}

	out, errOut, err := run1("migrate", "status", "--json")
	if err != nil {
		t.Fatalf("migrate status: %v %s", err, errOut)
	}
	var st struct {
		ControlPlane store.MainVersion   `json:"control_plane"`
		Places       []store.PlaceStatus `json:"places"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	if st.ControlPlane.Version != st.ControlPlane.Latest || st.ControlPlane.Version == 0 {
		t.Errorf("control plane %+v", st.ControlPlane)
	}
	places := map[string]bool{}
	for _, p := range st.Places {
		places[p.Place] = true
		if p.Version != p.Latest || p.Error != "" {
			t.Errorf("place %+v not at the latest version", p)
		}
	}
	for id, p := range created {
		if p == "schema" && !places["schema "+store.SchemaName(uuid.MustParse(id))] {
			t.Errorf("migrate status lacks the schema of %s: %s", id, out)
		}
	}
	if !places["shared"] || !places["database:t1"] {
		t.Errorf("migrate status: %s", out)
	}
}

// placedCLI runs the bulkhead command against the test databases with a
// configuration naming database targets t1 and t2 (its flags after the
// arguments), returning its output, its error output and its error; and
// a function deleting an organization that way when the test ends (org
// delete takes its flags before the id).
func placedCLI(t *testing.T) (run1 func(args ...string) (string, string, error), deleteAtEnd func(id string)) {
	t.Helper()
	ts := storetest.Targets(t)
	cfg := filepath.Join(t.TempDir(), "bulkhead.yaml")
	// Both of the test setup's targets: other packages' tests, in the same
	// database at the same time, place organizations on either, and
	// migrate status fails on a target the configuration does not name.
	if err := os.WriteFile(cfg, []byte("database_targets:\n  t1: {url_env: T1_URL, admin_url_env: T1_ADMIN_URL}\n  t2: {url_env: T2_URL, admin_url_env: T2_ADMIN_URL}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"BULKHEAD_ADMIN_DATABASE_URL": storetest.OwnerDSN(),
		"BULKHEAD_DATABASE_URL":       storetest.AppDSN(),
		"BULKHEAD_REDIS_URL":          "",
		"T1_URL":                      ts[0].DSN,
		"T1_ADMIN_URL":                ts[0].AdminDSN,
		"T2_URL":                      ts[1].DSN,
		"T2_ADMIN_URL":                ts[1].AdminDSN,
	}
	exec := func(args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, lookupFrom(env), &out, &errOut)
		return out.String(), errOut.String(), err
	}
	run1 = func(args ...string) (string, string, error) { return exec(append(args, "--config", cfg)...) }
	deleteAtEnd = func(id string) {
		t.Cleanup(func() {
			if out, errOut, err := exec("org", "delete", "--config", cfg, id); err != nil {
				t.Errorf("org delete: %v %s%s", err, out, errOut)
			}
		})
	}
	return run1, deleteAtEnd
}
