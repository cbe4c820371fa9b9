package config

import (
	"fmt"
	"slices"

	"github.com/bulkheadhq/bulkhead/store"
)

// DatabaseTarget is a database that organizations may be placed on
// (bulkhead org create --placement database:NAME): its DSNs, one for the
// runtime role and one for the owner, come from the environment variables
// the YAML names, so that no credential is in the file or in PostgreSQL.
type DatabaseTarget struct {
	// URLEnv names the variable holding the runtime role's DSN (no
	// superuser, no BYPASSRLS, not the owner: checked by migrate and
	// org create).
	URLEnv string `yaml:"url_env"`
	// AdminURLEnv names the variable holding the owner role's DSN
	// (migrations, deletions).
	AdminURLEnv string `yaml:"admin_url_env"`
	// URL and AdminURL are resolved by Load.
	URL      Secret `yaml:"-"`
	AdminURL Secret `yaml:"-"`
}

// resolveTargets fills each target's DSNs from the environment.
func (c *Config) resolveTargets(lookupEnv func(string) (string, bool)) []error {
	var errs []error
	for _, name := range c.targetNames() {
		t := c.DatabaseTargets[name]
		for _, v := range []struct {
			field, env string
			dst        *Secret
		}{{"url_env", t.URLEnv, &t.URL}, {"admin_url_env", t.AdminURLEnv, &t.AdminURL}} {
			if v.env == "" {
				errs = append(errs, fmt.Errorf("database_targets.%s.%s: must name an environment variable", name, v.field))
				continue
			}
			s, ok := lookupEnv(v.env)
			if !ok || s == "" {
				errs = append(errs, fmt.Errorf("database_targets.%s.%s: variable %s is not set", name, v.field, v.env))
			}
			*v.dst = Secret(s)
		}
		c.DatabaseTargets[name] = t
	}
	return errs
}

// validateTargets checks the targets' names (their connections and roles
// are checked where they are used: migrate, org create, serve).
func (c Config) validateTargets(bad func(name, format string, args ...any)) {
	for _, name := range c.targetNames() {
		if !store.ValidTargetName(name) {
			bad("database_targets."+name, "a target's name is lower-case letters, digits and _, starting with a letter, at most 40")
		}
	}
}

// targetNames are the targets' names in order.
func (c Config) targetNames() []string {
	names := make([]string, 0, len(c.DatabaseTargets))
	for n := range c.DatabaseTargets {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Targets returns the database targets for the store, in name order.
func (c Config) Targets() []store.Target {
	out := make([]store.Target, 0, len(c.DatabaseTargets))
	for _, n := range c.targetNames() {
		t := c.DatabaseTargets[n]
		out = append(out, store.Target{Name: n, DSN: t.URL.Reveal(), AdminDSN: t.AdminURL.Reveal()})
	}
	return out
}
