package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"path"
	"strings"
	"testing/fstest"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// The data-plane migrations (store/migrations/data) are the second
// migration set: one file is applied in every place (the shared place,
// each tenant schema, each database target), rendered for the place by
// renderData, and recorded in that place's own version table
// (<schema>.bulkhead_data_version). The main set (store/migrations) is the
// control plane's and runs in the main database only.
//
// To change the data plane, add one file to store/migrations/data, written
// with the placeholders {{schema}}, {{app}}, {{isolation}} and {{org}}
// (see 00001_baseline.sql) instead of a schema, role or policy predicate;
// every table of tenant content gets forced RLS, the policy
// tenant_isolation USING ({{isolation}}) WITH CHECK ({{isolation}}), and
// only the grants to {{app}} it needs. `bulkhead migrate` applies it
// everywhere, and a schema or target made later gets it at creation.
//
//go:embed migrations/data/*.sql
var dataFiles embed.FS

// dataVersionTable is each place's goose version table (schema-qualified).
const dataVersionTable = "bulkhead_data_version"

// sharedBaselineMarker marks a data migration that the main set already
// made in the shared place (the main database's public schema): there it
// is recorded as applied and runs nothing.
const sharedBaselineMarker = "bulkhead:shared-baseline"

// mainAppRole is the runtime role the main set's migrations grant to.
const mainAppRole = "bulkhead_app"

// dataLockID is the advisory lock that serializes data-plane migrations
// within one database (goose's session locker; another id than the main
// set's, so that the two sets never wait for each other).
var dataLockID = func() int64 {
	h := fnv.New64a()
	h.Write([]byte("bulkhead.data-plane-migrations"))
	return int64(h.Sum64() >> 1)
}()

// isolationPredicate is the policy predicate of every data-plane table in
// place p: the tenant setting, and in a tenant schema the schema's own
// organization as well, so that a statement in another tenant's context
// that names this schema reads and writes nothing.
func isolationPredicate(p Place) string {
	pred := `organization_id = (SELECT NULLIF(current_setting('` + TenantSetting + `', true), '')::uuid)`
	if p.Org != uuid.Nil {
		pred += ` AND organization_id = '` + p.Org.String() + `'::uuid`
	}
	return pred
}

// renderData returns the data-plane migrations rendered for place p, whose
// runtime role is app. Only values made here fill the placeholders: the
// schema is "public" or SchemaName's hex form, the role a quoted
// identifier, the organization a canonical uuid.
func renderData(p Place, app string) (fs.FS, error) {
	if p.Schema != "public" && !tenantSchema.MatchString(p.Schema) {
		return nil, fmt.Errorf("data plane: %q is not a schema Bulkhead makes", p.Schema)
	}
	org := ""
	if p.Org != uuid.Nil {
		org = p.Org.String()
	}
	r := strings.NewReplacer(
		"{{schema}}", p.Schema,
		"{{app}}", pgx.Identifier{app}.Sanitize(),
		"{{isolation}}", isolationPredicate(p),
		"{{org}}", org,
	)
	names, err := fs.Glob(dataFiles, "migrations/data/*.sql")
	if err != nil {
		return nil, err
	}
	out := fstest.MapFS{}
	for _, name := range names {
		b, err := dataFiles.ReadFile(name)
		if err != nil {
			return nil, err
		}
		text := string(b)
		if p == SharedPlace && strings.Contains(text, sharedBaselineMarker) {
			text = "-- made by the main set's migrations 00001-00015\n-- +goose Up\nSELECT 1;\n"
		}
		out[path.Base(name)] = &fstest.MapFile{Data: []byte(r.Replace(text)), Mode: 0o444}
	}
	return out, nil
}

// LatestDataVersion is the newest data-plane migration.
func LatestDataVersion() int64 {
	names, _ := fs.Glob(dataFiles, "migrations/data/*.sql")
	var latest int64
	for _, n := range names {
		if v, err := goose.NumericComponent(path.Base(n)); err == nil && v > latest {
			latest = v
		}
	}
	return latest
}

// migrateData brings place p of the database db (owner role) up to the
// latest data-plane migration, granting to the runtime role app, and
// returns the versions it applied.
func migrateData(ctx context.Context, db *sql.DB, p Place, app string) ([]int64, error) {
	fsys, err := renderData(p, app)
	if err != nil {
		return nil, err
	}
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(dataLockID))
	if err != nil {
		return nil, err
	}
	prov, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithSessionLocker(locker), goose.WithDisableGlobalRegistry(true),
		goose.WithTableName(p.Schema+"."+dataVersionTable))
	if err != nil {
		return nil, err
	}
	results, err := prov.Up(ctx)
	applied := make([]int64, 0, len(results))
	for _, r := range results {
		if r.Error == nil {
			applied = append(applied, r.Source.Version)
		}
	}
	return applied, err
}

// dataVersion reads place p's data-plane version (0: never migrated).
func dataVersion(ctx context.Context, q queryRower, p Place) (int64, error) {
	var v *int64
	err := q.QueryRow(ctx, `SELECT CASE WHEN to_regclass($1) IS NULL THEN NULL ELSE 0 END`, p.Schema+"."+dataVersionTable).Scan(&v)
	if err != nil || v == nil {
		return 0, err
	}
	var latest int64
	err = q.QueryRow(ctx, `SELECT coalesce(max(version_id), 0) FROM `+p.Schema+`.`+dataVersionTable+` WHERE is_applied`).Scan(&latest)
	return latest, err
}

// openSQL opens a database/sql handle for goose.
func openSQL(dsn, what string) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%s: the database URL does not parse", what)
	}
	return stdlib.OpenDB(*cfg), nil
}

// errNotOurs: a schema of a tenant's name exists but Bulkhead did not make it.
var errNotOurs = errors.New("exists and is not Bulkhead's")

// schemaMark is the comment Bulkhead puts on a tenant schema: a schema of
// that name without it (or owned by another role) is not ours, and is never
// used or dropped.
func schemaMark(org uuid.UUID) string { return "bulkhead tenant " + org.String() }

// ensureSchema creates org's tenant schema as the owner (the role of tx),
// marked as ours, and refuses one that exists without the mark or with
// another owner. Creation, mark and revocation are one transaction (tx).
func ensureSchema(ctx context.Context, tx pgx.Tx, org uuid.UUID) error {
	name := SchemaName(org)
	var ours bool
	err := tx.QueryRow(ctx, `SELECT n.nspowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
		AND coalesce(obj_description(n.oid, 'pg_namespace'), '') = $2
		FROM pg_namespace n WHERE n.nspname = $1`, name, schemaMark(org)).Scan(&ours)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return err
	case !ours:
		return fmt.Errorf("schema %s %w (another owner, or no tenant mark): refusing to use it", name, errNotOurs)
	default:
		return nil
	}
	for _, stmt := range []string{
		`CREATE SCHEMA ` + name,
		`COMMENT ON SCHEMA ` + name + ` IS '` + schemaMark(org) + `'`,
		`REVOKE ALL ON SCHEMA ` + name + ` FROM PUBLIC`,
	} {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("creating schema %s: %w", name, err)
		}
	}
	return nil
}
