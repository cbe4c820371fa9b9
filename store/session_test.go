package store_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// noTenantOnAnyConn fails the test if any connection of a pool still
// carries a tenant setting: conns are all of its connections (the pool's
// total is n), acquired while idle.
func noTenantOnAnyConn(t *testing.T, after string, conns []*pgxpool.Conn, n int32) {
	t.Helper()
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	if len(conns) == 0 || int32(len(conns)) != n {
		t.Fatalf("after %s: %d idle connections of %d; want every connection idle, and at least one", after, len(conns), n)
	}
	for i, c := range conns {
		var setting string
		err := c.QueryRow(context.Background(), `SELECT coalesce(current_setting('`+store.TenantSetting+`', true), '')`).Scan(&setting)
		if err != nil {
			t.Fatalf("after %s: connection %d: %v", after, i, err)
		}
		if setting != "" {
			t.Errorf("after %s: pooled connection %d carries tenant %q into its next borrower", after, i, setting)
		}
	}
}

// Every store function that touches tenant data leaves no tenant setting
// on any pooled connection: the setting is transaction-local everywhere,
// not only in InTenant (a session-wide set_config in, say, the key look-up
// would hand one tenant's identity to the next request on that
// connection). Checked on a pool of two after each call, success and
// failure alike, for the app role's Store and the owner's Admin.
func TestStoreCallsLeaveNoTenantSetting(t *testing.T) {
	st := storetest.Open(t, store.Options{MaxConns: 2})
	admin := storetest.Admin(t)
	owner := storetest.OwnerPool(t)
	a := seedTenant(t, owner)
	ctx := context.Background()
	var hash [32]byte
	var raw []byte
	if err := owner.QueryRow(ctx, `SELECT key_hash FROM api_keys WHERE id = $1`, a.keyID).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	copy(hash[:], raw)
	var promptID uuid.UUID
	if err := owner.QueryRow(ctx, `SELECT id FROM prompts WHERE organization_id = $1 LIMIT 1`, a.org).Scan(&promptID); err != nil {
		t.Fatal(err)
	}

	app := []struct {
		name string
		call func() error
	}{
		{"InTenant", func() error { return st.InTenant(ctx, a.org, func(pgx.Tx) error { return nil }) }},
		{"InTenant failing", func() error {
			err := st.InTenant(ctx, a.org, func(tx pgx.Tx) error { _, err := tx.Exec(ctx, `SELECT 1/0`); return err })
			if err == nil {
				return errors.New("division by zero succeeded")
			}
			return nil
		}},
		{"LookupKey", func() error {
			k, err := st.LookupKey(ctx, a.org, hash)
			if err == nil && k.ID != a.keyID {
				err = errors.New("looked up another key")
			}
			return err
		}},
		{"LookupKey of an unknown key", func() error {
			if _, err := st.LookupKey(ctx, a.org, [32]byte{1}); !errors.Is(err, store.ErrNotFound) {
				return errors.New("an unknown key was found")
			}
			return nil
		}},
		{"OrgExists", func() error { _, err := st.OrgExists(ctx, a.org); return err }},
		{"ListPrompts", func() error {
			ps, err := st.ListPrompts(ctx, a.org, store.PromptFilter{Limit: 10})
			if err == nil && len(ps) != a.prompts {
				err = errors.New("listed the wrong rows")
			}
			return err
		}},
		{"GetPrompt", func() error {
			p, err := st.GetPrompt(ctx, a.org, promptID)
			if err == nil && p.ID != promptID {
				err = errors.New("read another row")
			}
			return err
		}},
		{"Usage", func() error {
			_, err := st.Usage(ctx, a.org, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), "model")
			return err
		}},
		{"the request log writer", func() error {
			w := startWriter(t, st, store.WriterOptions{})
			w.Record(rec(a.org, "session"+uuid.NewString()[:8], 0))
			return w.stop(t)
		}},
	}
	for _, c := range app {
		if err := c.call(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		conns, n := store.IdleConnsForTest(ctx, st)
		noTenantOnAnyConn(t, c.name, conns, n)
	}

	var org store.Organization
	var key store.Key
	adminCalls := []struct {
		name string
		call func() (err error)
	}{
		{"CreateOrg", func() (err error) { org, err = admin.CreateOrg(ctx, "session test"); return err }},
		{"UpdateOrg", func() error {
			_, err := admin.UpdateOrg(ctx, org.ID, store.OrgChanges{Capture: store.CaptureMetadata})
			return err
		}},
		{"CreateKey", func() (err error) {
			key, err = admin.CreateKey(ctx, store.NewKey{OrgID: org.ID, Hash: [32]byte{byte(time.Now().UnixNano())}, DisplayPrefix: "sk_x", Name: "x", RateLimitPerMinute: 1})
			return err
		}},
		{"Keys", func() error { _, err := admin.Keys(ctx, org.ID); return err }},
		{"UpdateKeyLimits", func() error { rpm := 2; _, err := admin.UpdateKeyLimits(ctx, key.ID, &rpm, nil); return err }},
		{"RotateKey", func() error {
			_, _, err := admin.RotateKey(ctx, key.ID, time.Minute, store.NewKey{Hash: [32]byte{2, byte(time.Now().UnixNano())}, DisplayPrefix: "sk_y"})
			return err
		}},
		{"RevokeKey", func() error { _, err := admin.RevokeKey(ctx, key.ID); return err }},
		{"DeleteOrg", func() error { _, err := admin.DeleteOrg(ctx, org.ID); return err }},
	}
	for _, c := range adminCalls {
		if err := c.call(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		conns, n := store.AdminIdleConnsForTest(ctx, admin)
		noTenantOnAnyConn(t, "Admin."+c.name, conns, n)
	}
}

// sessionWideTenant matches the statements that set the tenant beyond
// their transaction: a plain or session-scoped SET of an app setting, any
// session-scoped SET, and a role's, user's or database's default for an
// app setting. (Written without matching themselves.)
var sessionWideTenant = []*regexp.Regexp{
	regexp.MustCompile(`(?i)\bSET\s+(SESSION\s+)?"?app\.`),
	regexp.MustCompile(`(?i)\bSET\s+SESSION\b`),
	regexp.MustCompile(`(?i)\bALTER\s+(ROLE|USER|DATABASE)\b[^;]*\bSET\s+"?app\.`),
}

var setConfigCall = regexp.MustCompile(`(?i)\bset_config\s*\(`)

// setConfigArgs returns the text of each top-level argument of the call
// whose opening parenthesis is at s[open], or nil if it does not close.
func setConfigArgs(s string, open int) []string {
	depth, start := 0, open+1
	var args []string
	for i := open; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return append(args, strings.TrimSpace(s[start:i]))
			}
		case ',':
			if depth == 1 {
				args = append(args, strings.TrimSpace(s[start:i]))
				start = i + 1
			}
		}
	}
	return nil
}

// No SQL in the module sets the tenant for longer than a transaction:
// every call of set_config passes is_local as the literal true, and no
// statement matches sessionWideTenant. Scans every .go and .sql file,
// tests included, except the deliberate breakages under deploy/dev/mutants.
func TestNoSessionWideTenantSetting(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found above the store package: %v", err)
	}
	files, calls := 0, 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if rel == filepath.Join("deploy", "dev", "mutants") || (strings.HasPrefix(d.Name(), ".") && rel != ".") {
				return filepath.SkipDir
			}
			return nil
		}
		if ext := filepath.Ext(path); ext != ".go" && ext != ".sql" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		src := string(b)
		line := func(off int) int { return strings.Count(src[:off], "\n") + 1 }
		for _, loc := range setConfigCall.FindAllStringIndex(src, -1) {
			calls++
			args := setConfigArgs(src, loc[1]-1)
			if len(args) != 3 || !strings.EqualFold(args[2], "true") {
				t.Errorf("%s:%d: a call of set_config with arguments %q: is_local must be the literal true", rel, line(loc[0]), args)
			}
		}
		for _, re := range sessionWideTenant {
			for _, loc := range re.FindAllStringIndex(src, -1) {
				t.Errorf("%s:%d: %q sets a setting beyond the transaction", rel, line(loc[0]), src[loc[0]:loc[1]])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Not vacuous: the module has InTenant's own call, among others.
	if files < 20 || calls < 2 {
		t.Fatalf("scanned %d files and %d set_config calls under %s; the walk missed the module", files, calls, root)
	}
}
