package storetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/bulkheadhq/bulkhead/store"
)

// Default DSNs of the test database targets (issue 14), matching
// deploy/dev/services.sh: two databases beside bulkhead_test, with the
// same roles.
const (
	DefaultTarget1AppDSN   = "postgres://bulkhead_app:bulkhead@127.0.0.1:5432/bulkhead_test_t1?sslmode=disable"
	DefaultTarget1OwnerDSN = "postgres://bulkhead_owner:bulkhead@127.0.0.1:5432/bulkhead_test_t1?sslmode=disable"
	DefaultTarget2AppDSN   = "postgres://bulkhead_app:bulkhead@127.0.0.1:5432/bulkhead_test_t2?sslmode=disable"
	DefaultTarget2OwnerDSN = "postgres://bulkhead_owner:bulkhead@127.0.0.1:5432/bulkhead_test_t2?sslmode=disable"
)

// TargetConfigs are the test database targets t1 and t2, from
// BULKHEAD_TEST_TARGET{1,2}_DATABASE_URL and
// BULKHEAD_TEST_TARGET{1,2}_ADMIN_DATABASE_URL, unchecked.
func TargetConfigs() []store.Target {
	return []store.Target{
		{Name: "t1", DSN: envOr("BULKHEAD_TEST_TARGET1_DATABASE_URL", DefaultTarget1AppDSN),
			AdminDSN: envOr("BULKHEAD_TEST_TARGET1_ADMIN_DATABASE_URL", DefaultTarget1OwnerDSN)},
		{Name: "t2", DSN: envOr("BULKHEAD_TEST_TARGET2_DATABASE_URL", DefaultTarget2AppDSN),
			AdminDSN: envOr("BULKHEAD_TEST_TARGET2_ADMIN_DATABASE_URL", DefaultTarget2OwnerDSN)},
	}
}

var (
	placesOnce sync.Once
	placesErr  error
)

// Targets returns the test database targets, every place migrated (once
// per process); a missing target database stops the test as a missing
// service does (fails under CI).
func Targets(t testing.TB) []store.Target {
	t.Helper()
	Migrate(t)
	ts := TargetConfigs()
	placesOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		_, placesErr = store.MigratePlaces(ctx, OwnerDSN(), ts)
	})
	if placesErr != nil {
		Unavailable(t, "the test database targets (bulkhead_test_t1, bulkhead_test_t2: deploy/dev/services.sh)", placesErr)
	}
	return ts
}

// PlacedAdmin is Admin with the test database targets.
func PlacedAdmin(t testing.TB) *store.Admin {
	t.Helper()
	ts := Targets(t)
	a := Admin(t)
	a.UseTargets(ts)
	return a
}
