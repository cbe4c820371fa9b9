// Package store is Bulkhead's PostgreSQL layer: the connection pool of the
// runtime role, the embedded migrations, and the one way to run a tenant's
// statements (InTenant), under Row-Level Security.
//
// The database, not this package, is what keeps tenants apart: every tenant
// table has forced RLS whose policies read the transaction-local setting
// app.current_tenant_id. InTenant (and its read-only form) sets it, and
// so does the request-log writer, between the tenants of one transaction
// (writer_insert.go); always transaction-locally.
package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	pgxuuid "github.com/vgarvardt/pgx-google-uuid/v5"
)

// TenantSetting is the transaction-local setting the RLS policies read.
const TenantSetting = "app.current_tenant_id"

// Sentinel errors; match them with errors.Is.
var (
	// ErrNotFound: no row, or a row of another tenant (indistinguishable by design).
	ErrNotFound = errors.New("not found")
	// ErrConflict: a unique constraint or foreign key refused the write.
	ErrConflict = errors.New("conflict")
	// ErrForbidden: the database refused the statement for this role or tenant
	// (row-level security, or a missing privilege).
	ErrForbidden = errors.New("forbidden")
	// ErrNoTenant: InTenant was called without a tenant.
	ErrNoTenant = errors.New("no tenant")
)

// Store is a pool of connections for the runtime (app) role. It is safe for
// concurrent use.
type Store struct {
	pool     *pgxpool.Pool
	txScoped bool // Options.TransactionScopedStatements
	keys     *keyring
	router   router // the places of organizations not in the shared tables (router.go)
}

// Options tunes Open. The zero value keeps pgxpool's defaults.
type Options struct {
	// MaxConns caps the pool; 0 keeps pgxpool's default (max(4, NumCPU)).
	MaxConns int32
	// Lazy skips the connection check: Open succeeds while PostgreSQL is
	// down and connections are made when first needed. The gateway uses it
	// so that it can start, and serve keys cached in Redis, during an outage.
	Lazy bool
	// TransactionScopedStatements leaves no prepared statement on a
	// connection beyond the transaction that prepared it. Set it when a
	// pooler in transaction mode stands between the store and PostgreSQL
	// without tracking prepared statements (PgBouncer before 1.21, or
	// with max_prepared_statements = 0): there a statement prepared in
	// one transaction is missing from, or already on, the server
	// connection that the next transaction gets. Queries then run as
	// PostgreSQL's unnamed statement, in pgx's QueryExecModeCacheDescribe
	// (one round trip once a statement's parameter and result types are
	// known on the connection; binary formats as before), and the
	// request-log writer prepares its statements at the start of each
	// transaction and closes them before it ends (see prepareForTx). The
	// zero value prepares statements once per connection, as pgx does by
	// default.
	TransactionScopedStatements bool
	// Seal configures sealing: the KEK and the data-key cache.
	Seal SealOptions
}

// Open connects to dsn and checks the connection with a ping. ctx governs
// only the connection attempt, not the pool's lifetime.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	pool, err := newPool(ctx, dsn, opts)
	if err != nil {
		return nil, err
	}
	keys, err := newKeyring(opts.Seal)
	if err != nil {
		pool.Close()
		return nil, err
	}
	return &Store{pool: pool, txScoped: opts.TransactionScopedStatements, keys: keys}, nil
}

// registerTypes teaches a new connection's type map google/uuid's UUID
// (pgx-google-uuid). Without it pgx encoded a uuid.UUID argument through
// its driver.Valuer: the binary attempt failed, built an error and
// dropped it, and the text attempt succeeded, 19 allocations for each
// uuid argument (LookupKeys, CatalogsFor, BudgetsForOrgs, the read API).
func registerTypes(_ context.Context, conn *pgx.Conn) error {
	pgxuuid.Register(conn.TypeMap())
	return nil
}

// configureConns sets what every pool of the store (the main database's,
// each database target's) asks of its connections: the application
// name, the uuid types (registerTypes) and, with txScoped
// (TransactionScopedStatements), no statement left on a connection.
func configureConns(cfg *pgxpool.Config, txScoped bool) {
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = "bulkhead"
	cfg.AfterConnect = registerTypes
	if txScoped {
		// A statement's types are learnt once per connection (Parse and
		// Describe of the unnamed statement, Sync), and every execution
		// sends its text again (Parse, Bind, Execute, Sync): nothing is
		// left on the server connection past a Sync, so that a pooler may
		// hand the two to different server connections, as it does
		// outside a transaction. With the statement cache off, a query
		// that asks for QueryExecModeCacheStatement fails rather than
		// prepares.
		cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
		cfg.ConnConfig.StatementCacheCapacity = 0
	}
}

func newPool(ctx context.Context, dsn string, opts Options) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The parse error can quote the DSN, password included.
		return nil, errors.New("store: the database URL does not parse")
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	configureConns(cfg, opts.TransactionScopedStatements)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("store: connecting: %w", err)
	}
	if opts.Lazy {
		return pool, nil
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("store: connecting to %s:%d: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	return pool, nil
}

// Close closes every connection. It is idempotent.
func (s *Store) Close() {
	s.router.closeTargets()
	s.pool.Close()
}

// Ping checks that a connection can be had and used.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// InTenant runs fn inside one transaction whose first statement makes
// tenant the transaction-local tenant context:
//
//	BEGIN; SELECT set_config('app.current_tenant_id', '<tenant>', true)
//
// It commits if fn returns nil and rolls back otherwise (also when ctx is
// cancelled or fn panics). Errors are classified: match ErrNotFound,
// ErrConflict and ErrForbidden with errors.Is; fn's own errors stay in the
// chain. The setting dies with the transaction, so a
// pooled connection never carries one tenant's identity to the next
// borrower. fn must not keep tx after returning. ctx governs the whole
// transaction.
func (s *Store) InTenant(ctx context.Context, tenant uuid.UUID, fn func(pgx.Tx) error) error {
	return classify(inTenant(ctx, s.pool, tenant, fn))
}

type beginner interface {
	BeginTx(ctx context.Context, txOptions pgx.TxOptions) (pgx.Tx, error)
}

func inTenant(ctx context.Context, db beginner, tenant uuid.UUID, fn func(pgx.Tx) error) error {
	return beginTenant(ctx, db, "BEGIN", tenant, "", fn)
}

// inTenantRead is InTenant for the read API: a READ ONLY transaction whose
// statements are planned for their parameters' values every time
// (plan_cache_mode = force_custom_plan), so that the partitions of prompts
// outside a query's time range are pruned while planning: a cached generic
// plan would open and lock every day partition at each execution.
func (s *Store) inTenantRead(ctx context.Context, tenant uuid.UUID, fn func(pgx.Tx) error) error {
	return classify(beginTenant(ctx, s.pool, "BEGIN READ ONLY", tenant, forceCustomPlans, fn))
}

// The settings of a read transaction after the tenant's: forceCustomPlans
// for the read API (inTenantRead, inPlaceRead); reportSettings for the
// usage reports (Usage, UsageSeries, budget spend), whose every scan is a
// short range of an index (a tenant's rollup days and hours, and under an
// hour of its rows at each end): no sequential scan, and no JIT
// compilation, which cost more than such a query runs. Estimates cannot
// be trusted there: a tenant with most of a partition's rows but few in
// its last hour got a sequential scan of the whole partition (7.6 s on
// BenchmarkUsageFiveMillionRows). Nor parallel workers: starting them for
// an edge hour's few hundred rows took 10 of a series' 17 ms
// (BenchmarkUsageSeriesMillionRows). work_mem: a report by end user groups
// one rollup row per user and day or hour (1,000 users over 30 days: 60,000
// rows), whose sort spilled to disk with the default 4 MB.
const (
	forceCustomPlans = "; SET LOCAL plan_cache_mode = force_custom_plan"
	reportSettings   = forceCustomPlans + "; SET LOCAL enable_seqscan = off; SET LOCAL jit = off; SET LOCAL max_parallel_workers_per_gather = 0; SET LOCAL work_mem = '32MB'"
)

func beginTenant(ctx context.Context, db beginner, begin string, tenant uuid.UUID, then string, fn func(pgx.Tx) error) error {
	if tenant == uuid.Nil {
		return ErrNoTenant
	}
	// BEGIN and the transaction-local tenant setting travel as one
	// simple-protocol message: one round trip instead of two. Inlining is
	// safe because the value is uuid.UUID's own canonical formatting (hex
	// digits and dashes), never text from a request.
	opts := pgx.TxOptions{BeginQuery: begin + "; SELECT set_config('" + TenantSetting + "', '" + tenant.String() + "', true)" + then}
	return pgx.BeginTxFunc(ctx, db, opts, fn)
}

// classify maps pgx and PostgreSQL errors to the package's sentinels,
// keeping the original in the chain for logs.
func classify(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "23505", "23503": // unique_violation, foreign_key_violation
			return fmt.Errorf("%w: %w", ErrConflict, err)
		case "42501": // insufficient_privilege, which RLS violations also raise
			return fmt.Errorf("%w: %w", ErrForbidden, err)
		}
	}
	return err
}
