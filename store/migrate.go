package store

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrate applies every embedded migration not yet applied, as the owner
// role named by ownerDSN, and returns the versions of the main set it
// applied (none when the schema is current); it also brings the shared
// place's data plane up to date (store/migrations/data). It is idempotent and safe to run from several
// processes at once: a PostgreSQL advisory lock serializes them.
//
// The migrations are plain SQL files in store/migrations, applied by goose
// (github.com/pressly/goose), which records them in goose_db_version.
func Migrate(ctx context.Context, ownerDSN string) ([]int64, error) {
	return migrateTo(ctx, ownerDSN, 0)
}

// migrateTo is Migrate up to version (0: the latest).
func migrateTo(ctx context.Context, ownerDSN string, version int64) ([]int64, error) {
	connCfg, err := pgx.ParseConfig(ownerDSN)
	if err != nil {
		return nil, errors.New("migrate: the admin database URL does not parse")
	}
	db := stdlib.OpenDB(*connCfg)
	defer db.Close()

	fsys, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithSessionLocker(locker), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	var results []*goose.MigrationResult
	if version > 0 {
		results, err = p.UpTo(ctx, version)
	} else {
		results, err = p.Up(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	applied := make([]int64, 0, len(results))
	for _, r := range results {
		applied = append(applied, r.Source.Version)
	}
	if version == 0 {
		// The shared place's data plane (store/migrations/data) is part of
		// the main database's schema: the request log's tables there must
		// be current whenever the main set is. Tenant schemas and database
		// targets are MigratePlaces'.
		if _, err := migrateData(ctx, db, SharedPlace, mainAppRole); err != nil {
			return nil, fmt.Errorf("migrate: data plane of %s: %w", SharedPlace, err)
		}
	}
	return applied, nil
}

// MainVersion is the main (control-plane) migration set's state.
type MainVersion struct {
	Version int64 `json:"version"`
	Latest  int64 `json:"latest"`
}

// MigrationVersion reads the main set's version in the main database,
// changing nothing.
func MigrationVersion(ctx context.Context, ownerDSN string) (MainVersion, error) {
	conn, err := pgx.Connect(ctx, ownerDSN)
	if err != nil {
		return MainVersion{}, fmt.Errorf("migrate status: connecting as the owner: %w", err)
	}
	defer conn.Close(ctx)
	var v MainVersion
	var exists bool
	err = conn.QueryRow(ctx, `SELECT to_regclass('public.goose_db_version') IS NOT NULL`).Scan(&exists)
	if err == nil && exists {
		err = conn.QueryRow(ctx, `SELECT coalesce(max(version_id), 0) FROM public.goose_db_version WHERE is_applied`).Scan(&v.Version)
	}
	if err != nil {
		return MainVersion{}, fmt.Errorf("migrate status: %w", err)
	}
	names, _ := fs.Glob(migrationFiles, "migrations/*.sql")
	for _, n := range names {
		if x, err := goose.NumericComponent(path.Base(n)); err == nil && x > v.Latest {
			v.Latest = x
		}
	}
	return v, nil
}
