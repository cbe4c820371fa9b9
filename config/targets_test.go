package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// database_targets: the DSNs come from the variables the YAML names; a
// variable not set, a target without one, or a bad name is an error naming
// it; Targets returns them in name order, never printing a DSN.
func TestDatabaseTargets(t *testing.T) {
	write := func(yaml string) string {
		p := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	env := map[string]string{"EU_URL": "postgres://app@eu/db", "EU_ADMIN": "postgres://owner@eu/db", "US_URL": "postgres://app@us/db", "US_ADMIN": "postgres://owner@us/db"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	c, err := Load(write("database_targets:\n  us: {url_env: US_URL, admin_url_env: US_ADMIN}\n  eu: {url_env: EU_URL, admin_url_env: EU_ADMIN}\n"), lookup)
	if err != nil {
		t.Fatal(err)
	}
	ts := c.Targets()
	if len(ts) != 2 || ts[0].Name != "eu" || ts[0].DSN != env["EU_URL"] || ts[1].AdminDSN != env["US_ADMIN"] {
		t.Errorf("Targets = %+v", ts)
	}
	for yaml, says := range map[string]string{
		"database_targets:\n  eu: {url_env: EU_URL, admin_url_env: NOPE}\n":           "database_targets.eu.admin_url_env: variable NOPE is not set",
		"database_targets:\n  eu: {url_env: EU_URL}\n":                                "database_targets.eu.admin_url_env: must name an environment variable",
		"database_targets:\n  Bad-Name: {url_env: EU_URL, admin_url_env: EU_ADMIN}\n": "database_targets.Bad-Name",
	} {
		_, err := Load(write(yaml), lookup)
		if err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("%q: err = %v, want it to say %s", yaml, err, says)
		}
		if err != nil && strings.Contains(err.Error(), "postgres://") {
			t.Errorf("an error prints a DSN: %v", err)
		}
	}
}
