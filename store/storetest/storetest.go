// Package storetest connects tests to the real PostgreSQL and Redis that make test
// prepares (deploy/dev/services.sh): the app role through
// BULKHEAD_TEST_DATABASE_URL and the owner role through
// BULKHEAD_TEST_ADMIN_DATABASE_URL, both defaulting to the local
// bulkhead_test database.
//
// Outside CI a missing server skips the test with a loud message; with
// CI=true it fails the test.
package storetest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/bulkheadhq/bulkhead/store"
)

// Default DSNs, matching deploy/dev/services.sh.
const (
	DefaultAppDSN   = "postgres://bulkhead_app:bulkhead@127.0.0.1:5432/bulkhead_test?sslmode=disable"
	DefaultOwnerDSN = "postgres://bulkhead_owner:bulkhead@127.0.0.1:5432/bulkhead_test?sslmode=disable"
)

// AppDSN is the DSN of the runtime role for tests.
func AppDSN() string { return envOr("BULKHEAD_TEST_DATABASE_URL", DefaultAppDSN) }

// OwnerDSN is the DSN of the owner role for tests.
func OwnerDSN() string { return envOr("BULKHEAD_TEST_ADMIN_DATABASE_URL", DefaultOwnerDSN) }

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// Unavailable stops the test because a required service is missing: it
// fails when RequireServices says so and skips otherwise.
func Unavailable(t testing.TB, what string, err error) {
	t.Helper()
	if RequireServices() {
		t.Fatalf("%s is required (CI or BULKHEAD_REQUIRE_SERVICES is set): %v", what, err)
	}
	t.Skipf("SKIPPING: %s is not available (%v); run `make test`, which starts it", what, err)
}

// RequireServices reports whether a missing PostgreSQL or Redis fails a
// test instead of skipping it: under any non-empty CI (runners export
// "true", "1", "yes", ...) or BULKHEAD_REQUIRE_SERVICES, unless either is
// "false" or "0".
func RequireServices() bool {
	for _, k := range []string{"BULKHEAD_REQUIRE_SERVICES", "CI"} {
		switch v := strings.ToLower(os.Getenv(k)); v {
		case "":
			continue
		case "false", "0", "no":
			return false
		default:
			return true
		}
	}
	return false
}

var (
	migrateOnce sync.Once
	migrateErr  error
)

// Migrate brings the test database's schema up to date once per process.
func Migrate(t testing.TB) {
	t.Helper()
	migrateOnce.Do(func() {
		// Generous: a migration that rewrites rows (00008) takes minutes
		// on a test database that earlier runs filled.
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		_, migrateErr = store.Migrate(ctx, OwnerDSN())
	})
	if migrateErr != nil {
		Unavailable(t, "PostgreSQL (owner role)", migrateErr)
	}
}

// Open returns a Store for the app role on the migrated test database,
// closed when the test ends.
func Open(t testing.TB, opts store.Options) *store.Store {
	t.Helper()
	Migrate(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := store.Open(ctx, AppDSN(), opts)
	if err != nil {
		Unavailable(t, "PostgreSQL (app role)", err)
	}
	t.Cleanup(s.Close)
	return s
}

// Admin returns an Admin for the owner role on the migrated test database,
// closed when the test ends.
func Admin(t testing.TB) *store.Admin {
	t.Helper()
	Migrate(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := store.OpenAdmin(ctx, OwnerDSN(), "test:"+t.Name())
	if err != nil {
		Unavailable(t, "PostgreSQL (owner role)", err)
	}
	t.Cleanup(a.Close)
	return a
}

// OwnerPool returns a raw pool for the owner role (BYPASSRLS), closed when
// the test ends: for seeding and for checking what is really in a table.
// Never use it for the behaviour under test.
func OwnerPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	Migrate(t)
	pool, err := pgxpool.New(context.Background(), OwnerDSN())
	if err == nil {
		err = pool.Ping(context.Background())
	}
	if err != nil {
		Unavailable(t, "PostgreSQL (owner role)", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// ScratchDatabase creates an empty database for the test, owned by the
// owner role and with the app role's connect grants as
// deploy/dev/services.sh makes them, and drops it when the test ends. It
// returns the owner's and the app role's DSNs for it. Creating a database
// needs a PostgreSQL superuser, reached as deploy/dev/services.sh reaches
// it (root running psql as the postgres OS user, or postgres over TCP);
// without one the test stops as for a missing service.
func ScratchDatabase(t testing.TB) (ownerDSN, appDSN string) {
	t.Helper()
	name := fmt.Sprintf("bulkhead_scratch_%d_%s", os.Getpid(), strings.ReplaceAll(uuid.NewString()[:8], "-", ""))
	owner, err := url.Parse(OwnerDSN())
	if err != nil || owner.Host == "" {
		Unavailable(t, "a URL-form owner DSN (BULKHEAD_TEST_ADMIN_DATABASE_URL)", err)
	}
	super := Superuser
	if err := super("postgres", "CREATE DATABASE "+name+" OWNER bulkhead_owner"); err != nil {
		Unavailable(t, "a PostgreSQL superuser to create a scratch database", err)
	}
	t.Cleanup(func() {
		if err := super("postgres", "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("dropping %s: %v", name, err)
		}
	})
	if err := super(name, "REVOKE ALL ON DATABASE "+name+" FROM PUBLIC; GRANT CONNECT, TEMPORARY ON DATABASE "+name+
		" TO bulkhead_app; REVOKE CREATE ON SCHEMA public FROM PUBLIC; GRANT USAGE ON SCHEMA public TO bulkhead_app;"); err != nil {
		t.Fatalf("granting on %s: %v", name, err)
	}
	app, err := url.Parse(AppDSN())
	if err != nil {
		t.Fatalf("the app DSN: %v", err)
	}
	owner.Path, app.Path = "/"+name, "/"+name
	return owner.String(), app.String()
}

// Superuser runs sql in database db as a PostgreSQL superuser, reached as
// deploy/dev/services.sh reaches it (root running psql as the postgres OS
// user, else postgres over TCP on the owner DSN's host and port). Only
// for setting up what no application role may do: scratch databases,
// probe roles.
func Superuser(db, sql string) error {
	owner, err := url.Parse(OwnerDSN())
	if err != nil {
		return err
	}
	var cmd *exec.Cmd
	if _, err := exec.LookPath("runuser"); err == nil && os.Geteuid() == 0 {
		cmd = exec.Command("runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-p", owner.Port(), "-d", db, "-c", sql)
	} else {
		cmd = exec.Command("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", owner.Hostname(), "-p", owner.Port(), "-U", "postgres", "-d", db, "-c", sql)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// DefaultRedisURL matches deploy/dev/services.sh.
const DefaultRedisURL = "redis://127.0.0.1:6379/0"

// RedisURL is the Redis for tests (BULKHEAD_TEST_REDIS_URL).
func RedisURL() string { return envOr("BULKHEAD_TEST_REDIS_URL", DefaultRedisURL) }

// Redis returns a client of the test Redis, closed when the test ends.
// Tests must keep to keys of their own (random ids or a per-test prefix)
// and never flush the database.
func Redis(t testing.TB) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(RedisURL())
	if err != nil {
		t.Fatalf("BULKHEAD_TEST_REDIS_URL: %v", err)
	}
	rdb := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		Unavailable(t, "Redis", err)
	}
	t.Cleanup(func() { rdb.Close() })
	return rdb
}
