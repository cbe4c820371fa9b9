package store_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// placedTenants creates A (shared), B (schema) and C (database target t1)
// and D (database target t2) and deletes them when the test ends.
func placedTenants(t *testing.T, a *store.Admin) (A, B, C, D store.Organization) {
	t.Helper()
	mk := func(name string, p store.Placement) store.Organization { return placedTenant(t, a, name, p) }
	return mk("A shared", store.Placement{Kind: store.PlaceShared}),
		mk("B schema", store.Placement{Kind: store.PlaceSchema}),
		mk("C t1", store.Placement{Kind: store.PlaceDatabase, Target: "t1"}),
		mk("D t2", store.Placement{Kind: store.PlaceDatabase, Target: "t2"})
}

// placedTenant creates an organization placed by p, deleted when the test
// ends (if the test has not deleted it).
func placedTenant(t *testing.T, a *store.Admin, name string, p store.Placement) store.Organization {
	t.Helper()
	o, _, err := a.CreateOrgPlaced(context.Background(), store.NewOrg{Name: name, Capture: store.CaptureFull, Placement: p}, store.Idempotency{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.DeleteOrg(context.Background(), o.ID) })
	return o
}

// countIn counts org's rows of a run in one place's prompts, as its owner.
func countIn(t *testing.T, pool *pgxpool.Pool, schema string, org uuid.UUID, run string) int {
	t.Helper()
	var n int
	err := pool.QueryRow(context.Background(), `SELECT count(*) FROM `+schema+`.prompts
		WHERE organization_id = $1 AND split_part(request_id, '/', 2) = $2`, org, run).Scan(&n)
	if err != nil {
		t.Fatalf("counting %s.prompts: %v", schema, err)
	}
	return n
}

// The writer sends each tenant's records to its placement, and nowhere
// else; with target t2 cut, only D's records wait (in t2's own spool)
// while A, B and C keep flowing; once t2 is back, D's arrive, each once.
func TestWriterRoutesByPlacement(t *testing.T) {
	ts := storetest.Targets(t)
	a := storetest.PlacedAdmin(t)
	A, B, C, D := placedTenants(t, a)

	// t2 reached through a proxy the test can cut.
	u, err := url.Parse(ts[1].DSN)
	if err != nil {
		t.Fatal(err)
	}
	proxy := storetest.NewFaultProxy(t, u.Host)
	u.Host = proxy.Addr()
	cut := []store.Target{ts[0], {Name: "t2", DSN: u.String(), AdminDSN: ts[1].AdminDSN}}

	st, err := store.Open(context.Background(), storetest.AppDSN(), store.Options{MaxConns: 4})
	if err != nil {
		storetest.Unavailable(t, "PostgreSQL (app role)", err)
	}
	t.Cleanup(st.Close)
	st.UseTargets(cut, store.TargetPoolOptions{MaxConns: 2})
	dir := t.TempDir()
	w := startWriter(t, st, store.WriterOptions{SpoolDir: dir, FlushInterval: 10 * time.Millisecond,
		WriteTimeout: 500 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})

	owner := storetest.OwnerPool(t)
	t1, t2 := targetOwner(t, "t1"), targetOwner(t, "t2")
	run := "route" + uuid.NewString()[:8]
	orgs := []uuid.UUID{A.ID, B.ID, C.ID, D.ID}
	const per = 50

	proxy.Cut("refuse")
	for i := range per {
		for _, o := range orgs {
			w.Record(rec(o, run, i))
		}
	}
	waitFor(t, 30*time.Second, "A, B and C's records while t2 is cut", func() bool {
		return countIn(t, owner, "public", A.ID, run) == per &&
			countIn(t, owner, store.SchemaName(B.ID), B.ID, run) == per &&
			countIn(t, t1, "public", C.ID, run) == per
	})
	if n := countIn(t, t2, "public", D.ID, run); n != 0 {
		t.Errorf("D has %d rows on t2 while it is cut", n)
	}
	if s := w.Stats(); s.Replaying {
		t.Errorf("the main spool is replaying (%+v): t2's outage reached the other tenants", s)
	}

	proxy.Restore()
	waitFor(t, 30*time.Second, "D's records once t2 is back", func() bool { return countIn(t, t2, "public", D.ID, run) == per })

	// Each tenant's rows only in its own place.
	places := []struct {
		name   string
		pool   *pgxpool.Pool
		schema string
		org    uuid.UUID
	}{{"shared", owner, "public", A.ID}, {"schema", owner, store.SchemaName(B.ID), B.ID}, {"t1", t1, "public", C.ID}, {"t2", t2, "public", D.ID}}
	for _, p := range places {
		for _, o := range orgs {
			want := 0
			if o == p.org {
				want = per
			}
			if got := countIn(t, p.pool, p.schema, o, run); got != want {
				t.Errorf("%s holds %d rows of %s, want %d", p.name, got, o, want)
			}
		}
	}
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
	if s := w.Stats(); s.DeadLetters != 0 || s.Lost != 0 {
		t.Errorf("stats %+v", s)
	}
}

// The read API reads each tenant from its placement, and B's context never
// reaches C's rows: B's key against C's ids is not found.
func TestReadAPIByPlacement(t *testing.T) {
	ts := storetest.Targets(t)
	a := storetest.PlacedAdmin(t)
	A, B, C, _ := placedTenants(t, a)
	st := storetest.Open(t, store.Options{})
	st.UseTargets(ts, store.TargetPoolOptions{})
	w := startWriter(t, st, store.WriterOptions{FlushInterval: 5 * time.Millisecond})
	run := "read" + uuid.NewString()[:8]
	for i := range 3 {
		for _, o := range []uuid.UUID{A.ID, B.ID, C.ID} {
			r := rec(o, run, i)
			r.EndUser = "user-" + o.String()[:8]
			r.Cost, r.Priced = 1500, true // 0.0015 USD
			w.Record(r)
		}
	}
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	since, until := time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	// The operator's report across tenants counts every place.
	byOrg, err := a.UsageByOrg(ctx, since, until)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uuid.UUID]int64{}
	for _, u := range byOrg {
		seen[u.OrganizationID] = u.Requests
	}
	for _, o := range []uuid.UUID{A.ID, B.ID, C.ID} {
		if seen[o] != 3 {
			t.Errorf("UsageByOrg: %s has %d requests, want 3 (every place counted)", o, seen[o])
		}
		// The end users' report, the series and a budget's spend read the
		// tenant's own place.
		u, err := st.Usage(ctx, o, since, until, "user")
		if err != nil || len(u) != 1 || u[0].Group != "user-"+o.String()[:8] || u[0].Requests != 3 || u[0].CostUSD == nil || *u[0].CostUSD != 4500 {
			t.Errorf("%s usage by user = %+v, %v", o, u, err)
		}
		series, err := st.UsageSeries(ctx, o, since, until, "model")
		if err != nil || len(series) != 1 || series[0].Requests != 3 {
			t.Errorf("%s series = %+v, %v", o, series, err)
		}
		spent, err := st.BudgetSpend(ctx, store.Budget{OrgID: o}, since, until)
		if err != nil || spent != 4500 {
			t.Errorf("%s budget spend = %v, %v; want 4500 micro-USD", o, spent, err)
		}
	}
	ids := map[uuid.UUID][]uuid.UUID{}
	for _, o := range []uuid.UUID{A.ID, B.ID, C.ID} {
		ps, err := st.ListPrompts(ctx, o, store.PromptFilter{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) != 3 {
			t.Fatalf("%s lists %d prompts, want 3", o, len(ps))
		}
		for _, p := range ps {
			if p.Prompt == nil || *p.Prompt == "" {
				t.Errorf("%s: a prompt without its text", o)
			}
			ids[o] = append(ids[o], p.ID)
		}
		u, err := st.Usage(ctx, o, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), "model")
		if err != nil || len(u) != 1 || u[0].Requests != 3 {
			t.Errorf("%s usage = %+v, %v; want 3 requests", o, u, err)
		}
		if _, err := st.GetPrompt(ctx, o, ids[o][0]); err != nil {
			t.Errorf("%s GetPrompt of its own row: %v", o, err)
		}
	}
	for _, pair := range [][2]uuid.UUID{{B.ID, C.ID}, {C.ID, B.ID}, {A.ID, C.ID}, {B.ID, A.ID}} {
		for _, id := range ids[pair[1]] {
			if _, err := st.GetPrompt(ctx, pair[0], id); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("%s reading %s's row %s: err = %v, want not found", pair[0], pair[1], id, err)
			}
		}
	}
}

// Partition maintenance runs in every place: a day partition missing in a
// tenant schema and in a database target is made again by the app role's
// CreatePartitions.
func TestCreatePartitionsEveryPlace(t *testing.T) {
	ts := storetest.Targets(t)
	a := storetest.PlacedAdmin(t)
	_, B, _, _ := placedTenants(t, a)
	owner := storetest.OwnerPool(t)
	t1 := targetOwner(t, "t1")
	ctx := context.Background()
	day := "prompts_" + time.Now().UTC().AddDate(0, 0, 5).Format("20060102")
	for _, x := range []struct {
		pool   *pgxpool.Pool
		schema string
	}{{owner, store.SchemaName(B.ID)}, {t1, "public"}} {
		if _, err := x.pool.Exec(ctx, `DROP TABLE `+x.schema+`.`+day); err != nil {
			t.Fatal(err)
		}
	}
	st := storetest.Open(t, store.Options{})
	st.UseTargets(ts, store.TargetPoolOptions{})
	n, err := st.CreatePartitions(ctx, 14)
	if err != nil {
		t.Fatal(err)
	}
	if n < 2 {
		t.Errorf("created %d partitions, want at least the 2 dropped", n)
	}
	for _, x := range []struct {
		pool   *pgxpool.Pool
		schema string
	}{{owner, store.SchemaName(B.ID)}, {t1, "public"}} {
		var forced bool
		if err := x.pool.QueryRow(ctx, `SELECT relforcerowsecurity FROM pg_class WHERE oid = to_regclass($1)`, x.schema+"."+day).Scan(&forced); err != nil || !forced {
			t.Errorf("%s.%s: forced RLS %v, %v", x.schema, day, forced, err)
		}
	}
}

// Retention in every place: the app role's run deletes a schema tenant's
// rows past its retention (prompts_apply_placed_retention), the owner's
// run a database target tenant's; each audited.
func TestRetentionEveryPlace(t *testing.T) {
	storetest.Targets(t)
	a := storetest.PlacedAdmin(t)
	_, B, C, _ := placedTenants(t, a)
	owner := storetest.OwnerPool(t)
	t1 := targetOwner(t, "t1")
	ctx := context.Background()
	days := store.Retention(1)
	for _, o := range []uuid.UUID{B.ID, C.ID} {
		if _, err := a.UpdateOrg(ctx, o, store.OrgChanges{Retention: &days}); err != nil {
			t.Fatal(err)
		}
	}
	old := func(pool *pgxpool.Pool, schema string, org uuid.UUID) {
		seedPlacePrompts(t, pool, schema, org, 2)
		if _, err := pool.Exec(ctx, `INSERT INTO `+schema+`.prompts (organization_id, request_id, model, status, created_at)
			SELECT $1, 'old-' || g, 'm', 200, now() - interval '3 days' FROM generate_series(1, 3) g`, org); err != nil {
			t.Fatal(err)
		}
	}
	old(owner, store.SchemaName(B.ID), B.ID)
	old(t1, "public", C.ID)
	st := storetest.Open(t, store.Options{})
	if _, err := st.ApplyRetention(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ApplyRetention(ctx); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		pool   *pgxpool.Pool
		schema string
		org    uuid.UUID
	}{{owner, store.SchemaName(B.ID), B.ID}, {t1, "public", C.ID}} {
		var n int
		x.pool.QueryRow(ctx, `SELECT count(*) FROM `+x.schema+`.prompts WHERE organization_id = $1`, x.org).Scan(&n)
		if n != 2 {
			t.Errorf("%s: %d rows left, want the 2 recent ones", x.schema, n)
		}
		var audits int
		owner.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE organization_id = $1 AND action = 'retention.delete'`, x.org).Scan(&audits)
		if audits != 1 {
			t.Errorf("%s: %d retention audit rows, want 1", x.schema, audits)
		}
	}
}

// /readyz's probe of each target: a reachable one answers, an unreachable
// one fails without touching the others; an unknown name is an error.
func TestPingTarget(t *testing.T) {
	ts := storetest.Targets(t)
	st := storetest.Open(t, store.Options{})
	down := store.Target{Name: "down", DSN: "postgres://bulkhead_app:x@127.0.0.1:1/x?sslmode=disable&connect_timeout=1", AdminDSN: "postgres://x@127.0.0.1:1/x"}
	st.UseTargets(append([]store.Target{down}, ts...), store.TargetPoolOptions{})
	ctx := context.Background()
	if got := st.TargetNames(); len(got) != 3 || got[0] != "down" {
		t.Errorf("TargetNames = %v", got)
	}
	if err := st.PingTarget(ctx, "t1"); err != nil {
		t.Errorf("t1: %v", err)
	}
	if err := st.PingTarget(ctx, "down"); err == nil {
		t.Error("an unreachable target answered")
	}
	if err := st.PingTarget(ctx, "t2"); err != nil {
		t.Errorf("t2 after down's failure: %v", err)
	}
	if err := st.PingTarget(ctx, "nope"); !errors.Is(err, store.ErrUnknownTarget) {
		t.Errorf("unknown target: %v", err)
	}
}

// BenchmarkWriterPlacement: the request log's rows/s with every tenant in
// one placement: shared (the pipelined, prepared path), schema or a
// database target (a transaction per place, statements sent as the
// unnamed one). Compare the three in one run.
func BenchmarkWriterPlacement(b *testing.B) {
	for _, n := range []int{10, 100} {
		for _, pl := range []store.Placement{{Kind: store.PlaceShared}, {Kind: store.PlaceSchema}, {Kind: store.PlaceDatabase, Target: "t1"}} {
			b.Run(fmt.Sprintf("tenants=%d/%s", n, strings.ReplaceAll(pl.String(), ":", "_")), func(b *testing.B) {
				ts := storetest.Targets(b)
				a := storetest.PlacedAdmin(b)
				orgs := make([]uuid.UUID, n)
				for i := range orgs {
					o, _, err := a.CreateOrgPlaced(context.Background(), store.NewOrg{Name: "bench", Capture: store.CaptureFull, Placement: pl}, store.Idempotency{})
					if err != nil {
						b.Fatal(err)
					}
					orgs[i] = o.ID
					b.Cleanup(func() { a.DeleteOrg(context.Background(), o.ID) })
				}
				st := storetest.Open(b, store.Options{MaxConns: 10})
				st.UseTargets(ts, store.TargetPoolOptions{MaxConns: 4})
				benchWriterOrgs(b, st, store.WriterOptions{}, orgs)
			})
		}
	}
}

// A schema tenant deleted while its records are on their way: the writer
// still routes them to the schema (its placement cache), finds it gone,
// and makes them dead letters; the other tenants' records keep flowing
// (no spool, no retry loop).
func TestWriterSchemaTenantDeletedInFlight(t *testing.T) {
	storetest.Targets(t)
	a := storetest.PlacedAdmin(t)
	A, B, _, _ := placedTenants(t, a)
	st := storetest.Open(t, store.Options{})
	w := startWriter(t, st, store.WriterOptions{SpoolDir: t.TempDir(), FlushInterval: 5 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	run := "gone" + uuid.NewString()[:8]
	w.Record(rec(B.ID, run, 0))
	w.Record(rec(A.ID, run, 0))
	owner := storetest.OwnerPool(t)
	waitFor(t, 10*time.Second, "the first records", func() bool {
		return countIn(t, owner, "public", A.ID, run) == 1 && countIn(t, owner, store.SchemaName(B.ID), B.ID, run) == 1
	})
	if _, err := a.DeleteOrg(context.Background(), B.ID); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		w.Record(rec(B.ID, run, i))
		w.Record(rec(A.ID, run, i))
	}
	waitFor(t, 10*time.Second, "A's records after B's deletion", func() bool { return countIn(t, owner, "public", A.ID, run) == 6 })
	waitFor(t, 10*time.Second, "B's records as dead letters", func() bool { return w.Stats().DeadLetters == 5 })
	if s := w.Stats(); s.Replaying || s.SpoolBytes != 0 {
		t.Errorf("stats %+v: the deleted schema was taken for an outage", s)
	}
}

// With TransactionScopedStatements (a pooler in transaction mode) the
// schema and database tenants' rows go in as the unnamed statement, one
// pipeline per place: they land in their places, each tenant's only in
// its own, and no statement is left prepared on a connection for the
// next transaction (another client's, behind a pooler).
func TestWriterPlacedTransactionScoped(t *testing.T) {
	ts := storetest.Targets(t)
	a := storetest.PlacedAdmin(t)
	A, B, C, _ := placedTenants(t, a)
	st := storetest.Open(t, store.Options{MaxConns: 2, TransactionScopedStatements: true})
	st.UseTargets(ts, store.TargetPoolOptions{MaxConns: 2})
	w := startWriter(t, st, store.WriterOptions{FlushInterval: 5 * time.Millisecond})
	run := "txs" + uuid.NewString()[:8]
	const per = 30
	for i := range per {
		for _, o := range []uuid.UUID{A.ID, B.ID, C.ID} {
			w.Record(rec(o, run, i))
		}
	}
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
	owner, t1 := storetest.OwnerPool(t), targetOwner(t, "t1")
	for _, c := range []struct {
		pool   *pgxpool.Pool
		schema string
		org    uuid.UUID
	}{{owner, "public", A.ID}, {owner, store.SchemaName(B.ID), B.ID}, {t1, "public", C.ID}} {
		for _, o := range []uuid.UUID{A.ID, B.ID, C.ID} {
			want := 0
			if o == c.org {
				want = per
			}
			if got := countIn(t, c.pool, c.schema, o, run); got != want {
				t.Errorf("%s: %d rows of %s, want %d", c.schema, got, o, want)
			}
		}
	}
	conns, _ := store.IdleConnsForTest(context.Background(), st)
	for _, c := range conns {
		var n int
		if err := c.QueryRow(context.Background(), `SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'bulkhead_%'`).Scan(&n); err != nil || n != 0 {
			t.Errorf("%d of the writer's statements left prepared on a connection (%v)", n, err)
		}
		c.Release()
	}
}
