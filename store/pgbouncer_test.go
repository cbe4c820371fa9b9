package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// The store behind PgBouncer in transaction pooling mode: each test starts
// its own PgBouncer (storetest.PgBouncer) in front of the test database,
// with fewer server connections than the store has client connections,
// so that every server connection serves transactions of many clients
// and of both tenants in turn.

// bouncedStore opens an app-role Store through PgBouncer at dsn.
func bouncedStore(t testing.TB, dsn string, opts store.Options) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := store.Open(ctx, dsn, opts)
	if err != nil {
		t.Fatalf("opening the store through PgBouncer: %v", err)
	}
	t.Cleanup(st.Close)
	return st
}

// bouncer starts a PgBouncer of poolSize server connections for the app
// role on the migrated test database and returns its DSN.
func bouncer(t testing.TB, poolSize int) string {
	t.Helper()
	storetest.Migrate(t)
	return storetest.PgBouncer(t, storetest.AppDSN(), poolSize)
}

// THREATS 16 and 17 through PgBouncer: 2,000 concurrent transactions
// alternating tenants A and B over two server connections, one in seven
// failing after the tenant setting, never see the other tenant's rows or
// setting; afterwards neither server connection carries a tenant, and a
// statement without a tenant sees no row on either.
func TestPgBouncerTenantIsolation(t *testing.T) {
	const servers = 2
	st := bouncedStore(t, bouncer(t, servers), store.Options{MaxConns: 16, TransactionScopedStatements: true})
	owner := storetest.OwnerPool(t)
	tenants := []seeded{seedTenant(t, owner), seedTenant(t, owner)}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const n = 2000
	boom := errors.New("boom")
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		backends = map[int32]bool{}
	)
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			me := tenants[i%2]
			err := st.InTenant(ctx, me.org, func(tx pgx.Tx) error {
				var setting string
				var pid int32
				if err := tx.QueryRow(ctx, `SELECT current_setting('app.current_tenant_id'), pg_backend_pid()`).Scan(&setting, &pid); err != nil {
					return err
				}
				mu.Lock()
				backends[pid] = true
				mu.Unlock()
				if setting != me.org.String() {
					return fmt.Errorf("transaction %d for %s saw setting %s", i, me.org, setting)
				}
				if i%7 == 3 {
					return boom // rolled back after the setting
				}
				rows, _ := tx.Query(ctx, `SELECT organization_id FROM prompts WHERE created_at > $1`, time.Time{})
				orgs, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
				if err != nil {
					return err
				}
				if len(orgs) != me.prompts {
					return fmt.Errorf("transaction %d for %s saw %d prompts, want %d", i, me.org, len(orgs), me.prompts)
				}
				for _, o := range orgs {
					if o != me.org {
						return fmt.Errorf("transaction %d for %s saw a prompt of %s", i, me.org, o)
					}
				}
				return nil
			})
			if i%7 == 3 && errors.Is(err, boom) {
				err = nil
			} else if i%7 == 3 && err == nil {
				err = fmt.Errorf("transaction %d: fn's error was lost", i)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			if failed < 5 {
				t.Error(err)
			}
			failed++
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d transactions failed", failed, n)
	}
	// Not vacuous: more clients than server connections, and every
	// transaction ran on one of the two.
	conns, clients := store.IdleConnsForTest(ctx, st)
	for _, c := range conns {
		c.Release()
	}
	if clients <= servers || len(backends) == 0 || len(backends) > servers {
		t.Fatalf("%d client connections ran on %d server connections, want more than %d on at most %d", clients, len(backends), servers, servers)
	}

	// Both server connections, as a request without a tenant finds them.
	seen := onEachServer(t, st, servers, func(tx pgx.Tx, pid int32) {
		var setting string
		var prompts, orgs int
		err := tx.QueryRow(ctx, `SELECT coalesce(current_setting('app.current_tenant_id', true), ''),
			(SELECT count(*) FROM prompts WHERE organization_id = ANY($1)), (SELECT count(*) FROM organizations WHERE id = ANY($1))`,
			[]uuid.UUID{tenants[0].org, tenants[1].org}).Scan(&setting, &prompts, &orgs)
		if err != nil {
			t.Fatal(err)
		}
		if setting != "" || prompts != 0 || orgs != 0 {
			t.Errorf("server connection %d after the tenant transactions: setting %q, %d prompts and %d organizations visible without a tenant; want none",
				pid, setting, prompts, orgs)
		}
	})
	for _, pid := range seen {
		if !backends[pid] {
			t.Errorf("server connection %d served no tenant transaction: the check proves nothing of it", pid)
		}
	}
}

// onEachServer runs fn in a transaction on each of the servers server
// connections of the PgBouncer in front of st (which must have at least
// as many client connections), at once, so that each transaction holds
// another; it returns their backends' process ids.
func onEachServer(t *testing.T, st *store.Store, servers int, fn func(tx pgx.Tx, pid int32)) []int32 {
	t.Helper()
	ctx := context.Background()
	var txs []pgx.Tx
	for range servers {
		c, err := store.AcquireForTest(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Release()
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		txs = append(txs, tx)
	}
	seen := map[int32]bool{}
	var pids []int32
	for _, tx := range txs {
		var pid int32
		if err := tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
			t.Fatal(err)
		}
		if seen[pid] {
			t.Fatalf("%d concurrent transactions share server connection %d: not a pool of %d", servers, pid, servers)
		}
		seen[pid] = true
		pids = append(pids, pid)
		fn(tx, pid)
	}
	return pids
}

// The request-log writer through PgBouncer: a stream interleaving 40
// tenants, written many tenants to a transaction (each statement after
// its own tenant's setting), lands every row under its own tenant; a
// record PostgreSQL refuses goes through the row-by-row path and becomes
// the one dead letter.
func TestPgBouncerWriter(t *testing.T) {
	st := bouncedStore(t, bouncer(t, 2), store.Options{MaxConns: 8, TransactionScopedStatements: true})
	owner := storetest.OwnerPool(t)
	orgs := newOrgs(t, owner, 40)
	run := "pb" + uuid.NewString()[:8]
	core, logs := observer.New(zapcore.WarnLevel)
	// Batches of 250 records (and the rest at Close), each in up to three
	// transactions at once.
	w := startWriter(t, st, store.WriterOptions{BatchSize: 250, FlushInterval: time.Hour, Concurrency: 3, Log: zap.New(core)})
	const perOrg = 25
	for i := range perOrg * len(orgs) {
		w.Record(rec(orgs[i%len(orgs)], run, i))
		if i == 500 {
			bad := rec(orgs[7], run, 100000)
			bad.PromptTokens = -1 // refused by a check constraint
			w.Record(bad)
		}
	}
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
	s := w.Stats()
	if s.Written != perOrg*int64(len(orgs)) || s.DeadLetters != 1 || s.Spooled != 0 || s.Lost != 0 {
		t.Errorf("Written=%d DeadLetters=%d Spooled=%d Lost=%d, want %d, 1, 0, 0", s.Written, s.DeadLetters, s.Spooled, s.Lost, perOrg*len(orgs))
	}
	if s.Transactions >= int64(len(orgs)) {
		t.Errorf("%d transactions for %d tenants: the tenants did not share transactions", s.Transactions, len(orgs))
	}
	for _, e := range logs.All() {
		if e.Message != "request log: dead letter: PostgreSQL refused the record" {
			t.Errorf("unexpected log entry: %s %v", e.Message, e.ContextMap())
		}
	}
	got := countByOrg(t, owner, orgs, run)
	for _, org := range orgs {
		if got[org] != perOrg {
			t.Errorf("org %s: %d rows, want %d", org, got[org], perOrg)
		}
	}
	var misplaced int
	if err := owner.QueryRow(context.Background(), `SELECT count(*) FROM prompts WHERE organization_id = ANY($1)
		AND split_part(request_id, '/', 2) = $2 AND split_part(request_id, '/', 1) <> organization_id::text`, orgs, run).Scan(&misplaced); err != nil {
		t.Fatal(err)
	}
	if misplaced != 0 {
		t.Errorf("%d rows under another tenant than their record's", misplaced)
	}
	// The statements each transaction prepared are gone with it, also
	// from the one whose batch PostgreSQL refused.
	onEachServer(t, st, 2, func(tx pgx.Tx, pid int32) {
		rows, _ := tx.Query(context.Background(), `SELECT name FROM pg_prepared_statements`)
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		if len(names) > 0 {
			t.Errorf("server connection %d keeps %d prepared statements after the writer's transactions: %q", pid, len(names), names)
		}
	})
}

// The read API through PgBouncer, from eight goroutines over two server
// connections: each tenant lists, reads and sums its own rows and no
// other's, keys resolve within their tenant, and the day partitions are
// created (a statement outside any transaction).
func TestPgBouncerReadAPI(t *testing.T) {
	st := bouncedStore(t, bouncer(t, 2), store.Options{MaxConns: 8, TransactionScopedStatements: true})
	owner := storetest.OwnerPool(t)
	a, b := seedTenant(t, owner), seedTenant(t, owner)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	type tenant struct {
		seeded
		ids  map[uuid.UUID]bool
		hash [32]byte
	}
	var ts []tenant
	for _, s := range []seeded{a, b} {
		tn := tenant{seeded: s, ids: map[uuid.UUID]bool{}}
		rows, _ := owner.Query(ctx, `SELECT id FROM prompts WHERE organization_id = $1`, s.org)
		ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		if err != nil || len(ids) != s.prompts {
			t.Fatalf("the seeded prompts: %v, %d ids", err, len(ids))
		}
		for _, id := range ids {
			tn.ids[id] = true
		}
		var raw []byte
		if err := owner.QueryRow(ctx, `SELECT key_hash FROM api_keys WHERE id = $1`, s.keyID).Scan(&raw); err != nil {
			t.Fatal(err)
		}
		copy(tn.hash[:], raw)
		ts = append(ts, tn)
	}
	if _, err := st.CreatePartitions(ctx, 3); err != nil {
		t.Fatalf("CreatePartitions: %v", err)
	}

	check := func(me, other tenant) error {
		ps, err := st.ListPrompts(ctx, me.org, store.PromptFilter{Limit: 10})
		if err != nil {
			return fmt.Errorf("ListPrompts: %w", err)
		}
		if len(ps) != me.prompts {
			return fmt.Errorf("ListPrompts: %d rows, want %d", len(ps), me.prompts)
		}
		for _, p := range ps {
			if !me.ids[p.ID] {
				return fmt.Errorf("ListPrompts: row %s is not the tenant's", p.ID)
			}
		}
		for id := range me.ids {
			if p, err := st.GetPrompt(ctx, me.org, id); err != nil || p.ID != id || p.Model != "gpt-4o-mini" {
				return fmt.Errorf("GetPrompt of its own row: %v, %+v", err, p)
			}
		}
		for id := range other.ids {
			if _, err := st.GetPrompt(ctx, me.org, id); !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("GetPrompt of the other tenant's row: err = %v, want ErrNotFound", err)
			}
		}
		u, err := st.Usage(ctx, me.org, time.Now().AddDate(0, 0, -30), time.Now().Add(time.Hour), "model") // seedTenant: in the last rolled-up day
		if err != nil {
			return fmt.Errorf("Usage: %w", err)
		}
		if len(u) != 1 || u[0].Group != "gpt-4o-mini" || u[0].Requests != int64(me.prompts) {
			return fmt.Errorf("Usage: %+v, want %d requests of gpt-4o-mini", u, me.prompts)
		}
		if k, err := st.LookupKey(ctx, me.org, me.hash); err != nil || k.ID != me.keyID {
			return fmt.Errorf("LookupKey of its own key: %v, %s", err, k.ID)
		}
		if _, err := st.LookupKey(ctx, me.org, other.hash); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("LookupKey of the other tenant's key: err = %v, want ErrNotFound", err)
		}
		return nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 20 {
				me, other := ts[(g+i)%2], ts[(g+i+1)%2]
				if err := check(me, other); err != nil {
					errs <- fmt.Errorf("goroutine %d, round %d, tenant %s: %w", g, i, me.org, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// pgCode returns err's SQLSTATE, or "".
func pgCode(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// Why TransactionScopedStatements exists: through a PgBouncer that does
// not track prepared statements, a statement one client prepared on a
// server connection is already there for the next client (42P05), and a
// client's prepared statement is missing from the other server
// connection it may get next (26000). Both happen, for pgx's statement
// cache (the read API) and for the writer's own statements, and with
// TransactionScopedStatements neither does.
func TestPgBouncerPreparedStatements(t *testing.T) {
	owner := storetest.OwnerPool(t)
	a := seedTenant(t, owner)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	list := func(st *store.Store) error {
		_, err := st.ListPrompts(ctx, a.org, store.PromptFilter{Limit: 10})
		return err
	}

	// One server connection, two clients: the second prepares what the
	// first left on it.
	alreadyThere := func(t *testing.T, opts store.Options) (error, error) {
		dsn := bouncer(t, 1)
		opts.MaxConns = 1
		s1, s2 := bouncedStore(t, dsn, opts), bouncedStore(t, dsn, opts)
		if err := list(s1); err != nil {
			t.Fatalf("the first client: %v", err)
		}
		return list(s2), nil
	}
	// Two server connections: while another client's transaction holds
	// the one the first client prepared on, the first client gets the
	// other one.
	missing := func(t *testing.T, opts store.Options) (error, error) {
		dsn := bouncer(t, 2)
		opts.MaxConns = 1
		s1, s2 := bouncedStore(t, dsn, opts), bouncedStore(t, dsn, opts)
		if err := list(s1); err != nil {
			t.Fatalf("the first client: %v", err)
		}
		held, release := make(chan struct{}), make(chan struct{})
		done := make(chan error, 1)
		go func() {
			done <- s2.InTenant(ctx, a.org, func(pgx.Tx) error {
				close(held)
				<-release
				return nil
			})
		}()
		<-held
		err := list(s1)
		close(release)
		return err, <-done
	}
	// The writer: one server connection, two writers in turn, each with
	// a good record (a batch's statements) and a refused one (the
	// row-by-row retry's).
	writers := func(t *testing.T, opts store.Options) (error, error) {
		dsn := bouncer(t, 1)
		opts.MaxConns = 2
		s1, s2 := bouncedStore(t, dsn, opts), bouncedStore(t, dsn, opts)
		orgs := newOrgs(t, owner, 2)
		run := "pp" + uuid.NewString()[:8]
		records := func(w *running, org uuid.UUID, i int) {
			w.Record(rec(org, run, i))
			bad := rec(org, run, i+100)
			bad.PromptTokens = -1 // refused by a check constraint
			w.Record(bad)
		}
		w1 := startWriter(t, s1, store.WriterOptions{FlushInterval: 10 * time.Millisecond})
		records(w1, orgs[0], 1)
		waitFor(t, 10*time.Second, "the first writer", func() bool { s := w1.Stats(); return s.Written == 1 && s.DeadLetters == 1 })
		core, logs := observer.New(zapcore.WarnLevel)
		w2 := startWriter(t, s2, store.WriterOptions{FlushInterval: 10 * time.Millisecond, SpoolDir: t.TempDir(), Log: zap.New(core)})
		records(w2, orgs[1], 2)
		var failure error
		waitFor(t, 10*time.Second, "the second writer or its failure", func() bool {
			for _, e := range logs.FilterMessageSnippet("PostgreSQL is unavailable").All() {
				failure = fmt.Errorf("%v", e.ContextMap()["error"])
			}
			s := w2.Stats()
			return s.Written == 1 && s.DeadLetters == 1 || failure != nil
		})
		if failure != nil {
			return failure, nil
		}
		if n := total(countByOrg(t, owner, orgs, run)); n != 2 {
			t.Errorf("%d rows of the two writers, want 2", n)
		}
		return nil, nil
	}

	for _, c := range []struct {
		name string
		run  func(*testing.T, store.Options) (error, error)
		code string // what a prepared statement meets
	}{
		{"already there", alreadyThere, "42P05"},
		{"missing", missing, "26000"},
		{"writer", writers, "42P05"},
	} {
		t.Run(c.name+"/prepared", func(t *testing.T) {
			err, other := c.run(t, store.Options{})
			if other != nil {
				t.Fatalf("the other client: %v", other)
			}
			// The writer's failure is only in its log: match the text.
			if err == nil || pgCode(err) != c.code && !containsCode(err, c.code) {
				t.Fatalf("err = %v, want SQLSTATE %s: without TransactionScopedStatements this pooler is expected to break prepared statements", err, c.code)
			}
			t.Logf("as expected: %v", err)
		})
		t.Run(c.name+"/txscoped", func(t *testing.T) {
			err, other := c.run(t, store.Options{TransactionScopedStatements: true})
			if err != nil || other != nil {
				t.Fatalf("with TransactionScopedStatements: %v; the other client: %v", err, other)
			}
		})
	}
}

// containsCode reports whether err's text names SQLSTATE code, as a
// *pgconn.PgError's does.
func containsCode(err error, code string) bool {
	return err != nil && strings.Contains(err.Error(), "(SQLSTATE "+code+")")
}

// statementModes are the ways the benchmarks reach PostgreSQL: directly
// with prepared statements (the default); directly with
// TransactionScopedStatements (what the setting costs by itself); and
// through PgBouncer in transaction mode with TransactionScopedStatements
// (what the deployment costs: the setting and the pooler's hop), with as
// many server connections as the store has client connections, so that
// the pooler adds its hop but no wait.
var statementModes = []string{"prepared", "txscoped", "pgbouncer"}

// benchStore opens an app-role Store of maxConns connections in mode.
func benchStore(b *testing.B, mode string, maxConns int32) *store.Store {
	b.Helper()
	switch mode {
	case "prepared":
		return storetest.Open(b, store.Options{MaxConns: maxConns})
	case "txscoped":
		return storetest.Open(b, store.Options{MaxConns: maxConns, TransactionScopedStatements: true})
	case "pgbouncer":
		return bouncedStore(b, bouncer(b, int(maxConns)), store.Options{MaxConns: maxConns, TransactionScopedStatements: true})
	}
	b.Fatalf("unknown statement mode %q", mode)
	return nil
}

// BenchmarkReadAPI measures one call of each read-API function and of the
// key look-up, one at a time, in each of statementModes, on a tenant with
// 1,000 rows of the last hour: a list page of 20, a row by id, a usage
// report by model, and LookupKey (the look-up of a key no cache knows,
// on the request path).
func BenchmarkReadAPI(b *testing.B) {
	owner := storetest.OwnerPool(b)
	ctx := context.Background()
	org, keyID := uuid.New(), uuid.New()
	var hash [32]byte
	copy(hash[:], uuid.New().String())
	err := pgx.BeginFunc(ctx, owner, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO organizations (id, name) VALUES ($1, 'bench read api')`, org); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO api_keys (organization_id, id, key_hash, display_prefix, name, rate_limit_per_minute)
			VALUES ($1, $2, $3, 'sk_bench', 'bench', 60)`, org, keyID, hash[:]); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO prompts (organization_id, id, request_id, api_key_id, model, prompt_text, response, status, created_at)
			SELECT $1, prompts_row_id(t, gen_random_uuid()), 'r' || g, $2, 'm' || (g % 3), 'prompt', 'answer', 200, t
			FROM generate_series(1, 1000) g, LATERAL (SELECT now() - make_interval(secs => g * 3) AS t) c`, org, keyID)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if _, err := owner.Exec(context.Background(), `DELETE FROM organizations WHERE id = $1`, org); err != nil {
			b.Errorf("deleting the benchmark's organization: %v", err)
		}
	})
	var id uuid.UUID
	if err := owner.QueryRow(ctx, `SELECT id FROM prompts WHERE organization_id = $1 LIMIT 1`, org).Scan(&id); err != nil {
		b.Fatal(err)
	}
	calls := []struct {
		name string
		call func(*store.Store) error
	}{
		{"ListPrompts", func(st *store.Store) error {
			ps, err := st.ListPrompts(ctx, org, store.PromptFilter{Limit: 20})
			if err == nil && len(ps) != 20 {
				err = fmt.Errorf("%d rows", len(ps))
			}
			return err
		}},
		{"GetPrompt", func(st *store.Store) error { _, err := st.GetPrompt(ctx, org, id); return err }},
		{"Usage", func(st *store.Store) error {
			u, err := st.Usage(ctx, org, time.Now().Add(-24*time.Hour), time.Now().Add(time.Hour), "model")
			if err == nil && len(u) != 3 {
				err = fmt.Errorf("%d groups", len(u))
			}
			return err
		}},
		{"LookupKey", func(st *store.Store) error { _, err := st.LookupKey(ctx, org, hash); return err }},
	}
	for _, c := range calls {
		for _, mode := range statementModes {
			b.Run(c.name+"/"+mode, func(b *testing.B) {
				st := benchStore(b, mode, 2)
				if err := c.call(st); err != nil { // the connection's first: types learnt, statements prepared
					b.Fatal(err)
				}
				b.ReportAllocs()
				for b.Loop() {
					if err := c.call(st); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
