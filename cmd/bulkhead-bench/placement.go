package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/store"
)

// placement measures the seed's comparison of isolation strategies
// (issue 14) with numbers: for each strategy (shared tables, a schema
// per tenant, a database target) and each tenant count, it creates the
// tenants, then measures
//
//   - create: the mean time to create one organization there (a schema
//     is created and migrated; a target checked and migrated);
//   - migrate: `bulkhead migrate`'s walk over every place with nothing to
//     apply (what each deploy pays);
//   - catalog: the relations (pg_class rows) the tenants added, in the
//     main database plus the target;
//   - log rows/s: the request-log writer (as the gateway runs it, app
//     role) writing -records records spread round-robin over the tenants;
//   - read p50/p99: the read API on one big tenant of -big-rows rows over
//     30 days (a 20-row page of ListPrompts, a 30-day Usage by model);
//   - pools: the gateway process's Go heap grown by the store's pools
//     and writer, and the private memory (RssAnon) of its PostgreSQL
//     backends, which cache every relation they touched;
//   - proxy (unless -proxy=false): the real gateway of -bin, request log
//     on, under closed-loop load at -conns connections spread over one
//     API key per tenant (round-robin, or Zipf with -zipf), as a share
//     of the floor forwarder's throughput measured just before it in the
//     same round (the floor and mock upstream of bulkhead-bench keys),
//     with its p50/p99; -proxy-duration each.
//
// It uses the databases of BULKHEAD_ADMIN_DATABASE_URL and
// BULKHEAD_DATABASE_URL and the database target -target of the
// configuration (-config, database_targets); the database strategy
// places all the tenants on that one target (database per tenant costs
// one target's catalog and migration per tenant). Every organization it
// makes is deleted at the end of its round.
//
//	bulkhead-bench placement -config bulkhead.yaml -tenants 1,100,1000 -big-rows 1000000
func placement(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("placement", flag.ContinueOnError)
	cfgPath := fs.String("config", os.Getenv("BULKHEAD_CONFIG"), "configuration file naming the database target")
	tenantsFlag := fs.String("tenants", "1,100,1000", "tenant counts, comma-separated")
	strategies := fs.String("strategies", "shared,schema,database", "strategies, comma-separated")
	target := fs.String("target", "t1", "the database target of the database strategy")
	records := fs.Int("records", 50000, "request-log records written per round")
	bigRows := fs.Int64("big-rows", 200000, "rows of the big tenant whose reads are timed (the issue says 1,000,000: scaled down by default for time)")
	reads := fs.Int("reads", 200, "timed reads of each kind")
	proxy := fs.Bool("proxy", true, "measure the gateway's throughput against the floor's (false: skip the proxy phase)")
	bin := fs.String("bin", "bin", "folder with the bulkhead and mockllm binaries (the proxy phase)")
	proxyDur := fs.Duration("proxy-duration", 10*time.Second, "length of the proxy phase's floor and gateway loads, each")
	proxyRounds := fs.Int("proxy-rounds", 2, "floor and gateway pairs of the proxy phase, alternating which goes first; the best of each is reported")
	conns := fs.Int("conns", 50, "connections of the proxy phase (closed loop)")
	zipf := fs.Float64("zipf", 0, "the proxy phase draws the tenants' keys by Zipf with this exponent (above 1); 0: round-robin")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *proxyRounds < 1 || *conns < 1 {
		return fmt.Errorf("placement: -proxy-rounds and -conns must be at least 1, got %d and %d", *proxyRounds, *conns)
	}
	if *zipf != 0 && *zipf <= 1 {
		return fmt.Errorf("placement: -zipf must be above 1 (or 0: round-robin), got %g", *zipf)
	}
	var counts []int
	for _, s := range strings.Split(*tenantsFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("placement: -tenants: %q is not a positive count", s)
		}
		counts = append(counts, n)
	}
	cfg, err := config.Load(*cfgPath, os.LookupEnv)
	if err != nil {
		return err
	}
	ownerDSN, appDSN := cfg.AdminDatabaseURL.Reveal(), cfg.DatabaseURL.Reveal()
	targets := cfg.Targets()
	if _, err := store.Migrate(ctx, ownerDSN); err != nil {
		return err
	}
	if _, err := store.MigratePlaces(ctx, ownerDSN, targets); err != nil {
		return err
	}
	b := &placementBench{ownerDSN: ownerDSN, appDSN: appDSN, targets: targets, records: *records, bigRows: *bigRows, reads: *reads}
	if *proxy {
		rig, err := startFloor(ctx, *bin, *conns)
		if err != nil {
			return fmt.Errorf("placement: starting the floor (-bin %s; -proxy=false skips the proxy phase): %w", *bin, err)
		}
		defer rig.stop()
		b.proxy = &placementProxy{cfg: cfg, cfgPath: *cfgPath, bin: *bin, rig: rig, duration: *proxyDur, rounds: *proxyRounds, conns: *conns, zipf: *zipf}
	}
	for _, t := range targets {
		if t.Name == *target {
			b.target = t
		}
	}
	fmt.Printf("placement: %d records per round, big tenant %d rows, %d reads each; GOMAXPROCS %d\n", *records, *bigRows, *reads, runtime.GOMAXPROCS(0))
	if b.proxy != nil {
		mix := "round-robin"
		if *zipf > 1 {
			mix = fmt.Sprintf("Zipf s=%g", *zipf)
		}
		fmt.Printf("placement: proxy phase: %d floor and gateway (request log on) pairs, alternating, %s each, %d connections, one key per tenant, %s; best of each\n",
			*proxyRounds, *proxyDur, *conns, mix)
	}
	var results []placementResult
	for _, s := range strings.Split(*strategies, ",") {
		var p store.Placement
		switch s {
		case "shared":
			p = store.Placement{Kind: store.PlaceShared}
		case "schema":
			p = store.Placement{Kind: store.PlaceSchema}
		case "database":
			if b.target.Name == "" {
				return fmt.Errorf("placement: the configuration has no database target %q (-target, database_targets)", *target)
			}
			p = store.Placement{Kind: store.PlaceDatabase, Target: *target}
		default:
			return fmt.Errorf("placement: unknown strategy %q", s)
		}
		for _, n := range counts {
			r, err := b.round(ctx, p, n)
			if err != nil {
				return fmt.Errorf("placement: %s, %d tenants: %w", s, n, err)
			}
			r.print(os.Stdout, false)
			results = append(results, r)
		}
	}
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "| strategy\t| tenants\t| create/tenant\t| migrate\t| catalog (+relations)\t| log rows/s\t| list p50/p99\t| usage p50/p99\t| pools: Go heap / PG backends\t| proxy RPS (× floor)\t| proxy p50/p99\t|")
	fmt.Fprintln(tw, "|---\t|---\t|---\t|---\t|---\t|---\t|---\t|---\t|---\t|---\t|---\t|")
	for _, r := range results {
		r.print(tw, true)
	}
	return tw.Flush()
}

type placementBench struct {
	ownerDSN, appDSN string
	targets          []store.Target
	target           store.Target
	proxy            *placementProxy // nil: no proxy phase
	records          int
	bigRows          int64
	reads            int
}

type placementResult struct {
	strategy                     string
	tenants                      int
	create, migrate              time.Duration
	relations, addedRelations    int64
	rowsPerSec                   float64
	listP50, listP99             time.Duration
	usageP50, usageP99           time.Duration
	heapBytes, backendBytes      int64
	backends                     int
	writerLost, writerDeadLetter int64
	proxy                        *proxyResult // nil: not measured
}

func (r placementResult) print(w interface{ Write([]byte) (int, error) }, row bool) {
	proxyRate, proxyLatency := "-", "-"
	if p := r.proxy; p != nil {
		proxyRate = fmt.Sprintf("%.0f (%.2f× of %.0f)", p.rps, p.ratio(), p.floorRPS)
		proxyLatency = msText(p.p50) + " / " + msText(p.p99)
	}
	if row {
		fmt.Fprintf(w, "| %s\t| %d\t| %s\t| %s\t| %d (+%d)\t| %.0f\t| %s / %s\t| %s / %s\t| %.1f MiB / %.1f MiB (%d)\t| %s\t| %s\t|\n",
			r.strategy, r.tenants, r.create.Round(100*time.Microsecond), r.migrate.Round(time.Millisecond), r.relations, r.addedRelations,
			r.rowsPerSec, msText(r.listP50), msText(r.listP99), msText(r.usageP50), msText(r.usageP99),
			float64(r.heapBytes)/(1<<20), float64(r.backendBytes)/(1<<20), r.backends, proxyRate, proxyLatency)
		return
	}
	fmt.Fprintf(w, "placement: %s %d tenants: create %s/tenant, migrate %s, catalog %d relations (+%d), log %.0f rows/s (lost %d, dead letters %d), list p50 %s p99 %s, usage p50 %s p99 %s, Go heap +%.1f MiB, %d PG backends %.1f MiB private\n",
		r.strategy, r.tenants, r.create.Round(100*time.Microsecond), r.migrate.Round(time.Millisecond), r.relations, r.addedRelations,
		r.rowsPerSec, r.writerLost, r.writerDeadLetter, msText(r.listP50), msText(r.listP99), msText(r.usageP50), msText(r.usageP99),
		float64(r.heapBytes)/(1<<20), r.backends, float64(r.backendBytes)/(1<<20))
	if p := r.proxy; p != nil {
		fmt.Fprintf(w, "placement: %s %d tenants: proxy %s RPS, pairs %s of the floor, p50/p99 %s, gateway RSS %.1f MiB, errors %s\n",
			r.strategy, r.tenants, proxyRate, spread(p.pairs), proxyLatency, p.rss, p.errs)
	}
}

func msText(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

// round creates n tenants placed p, measures, and deletes them.
func (b *placementBench) round(ctx context.Context, p store.Placement, n int) (placementResult, error) {
	r := placementResult{strategy: p.Kind, tenants: n}
	a, err := store.OpenAdmin(ctx, b.ownerDSN, "bench:placement")
	if err != nil {
		return r, err
	}
	defer a.Close()
	a.UseTargets(b.targets)
	owner, err := pgxpool.New(ctx, b.ownerDSN)
	if err != nil {
		return r, err
	}
	defer owner.Close()
	var targetOwner *pgxpool.Pool
	if p.Kind == store.PlaceDatabase {
		if targetOwner, err = pgxpool.New(ctx, b.target.AdminDSN); err != nil {
			return r, err
		}
		defer targetOwner.Close()
	}
	relations := func() (int64, error) {
		var total int64
		for _, pool := range []*pgxpool.Pool{owner, targetOwner} {
			if pool == nil {
				continue
			}
			var c int64
			if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_class`).Scan(&c); err != nil {
				return 0, err
			}
			total += c
		}
		return total, nil
	}
	before, err := relations()
	if err != nil {
		return r, err
	}

	// Create.
	orgs := make([]uuid.UUID, 0, n)
	defer func() {
		dctx := context.WithoutCancel(ctx)
		for _, id := range orgs {
			if _, err := a.DeleteOrg(dctx, id); err != nil {
				fmt.Fprintf(os.Stderr, "placement: deleting %s: %v\n", id, err)
			}
		}
	}()
	run := uuid.NewString()[:8]
	start := time.Now()
	for i := range n {
		o, _, err := a.CreateOrgPlaced(ctx, store.NewOrg{Name: fmt.Sprintf("bench-placement-%s-%d", run, i), Capture: store.CaptureFull, Placement: p}, store.Idempotency{})
		if err != nil {
			return r, err
		}
		orgs = append(orgs, o.ID)
	}
	r.create = time.Since(start) / time.Duration(n)
	if r.relations, err = relations(); err != nil {
		return r, err
	}
	r.addedRelations = r.relations - before

	start = time.Now()
	if _, err := store.MigratePlaces(ctx, b.ownerDSN, b.targets); err != nil {
		return r, err
	}
	r.migrate = time.Since(start)

	// The big tenant's rows, in its place (as the owner, in bulk).
	big := orgs[0]
	bigPool, schema := owner, "public"
	switch p.Kind {
	case store.PlaceSchema:
		schema = store.SchemaName(big)
	case store.PlaceDatabase:
		bigPool = targetOwner
	}
	if err := seedPlaced(ctx, bigPool, schema, big, b.bigRows); err != nil {
		return r, err
	}
	// Statistics for the fresh rows, as autovacuum would give them in time:
	// without them the first round's reads are planned blind.
	if _, err := bigPool.Exec(ctx, `ANALYZE `+schema+`.prompts, `+schema+`.usage_hourly, `+schema+`.usage_daily`); err != nil {
		return r, err
	}

	// The gateway's side: its store and writer.
	runtime.GC()
	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)
	st, err := store.Open(ctx, b.appDSN, store.Options{MaxConns: 10})
	if err != nil {
		return r, err
	}
	defer st.Close()
	st.UseTargets(b.targets, store.TargetPoolOptions{})
	w, err := store.NewWriter(st, store.WriterOptions{Log: zap.NewNop()})
	if err != nil {
		return r, err
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	start = time.Now()
	for i := range b.records {
		w.Record(benchRecord(orgs[i%n], run, i))
	}
	cerr := w.Close(ctx)
	elapsed := time.Since(start)
	cancel()
	<-done
	if cerr != nil {
		return r, cerr
	}
	ws := w.Stats()
	r.rowsPerSec = float64(ws.Written+ws.Replayed) / elapsed.Seconds()
	r.writerLost, r.writerDeadLetter = ws.Lost, ws.DeadLetters

	// Reads on the big tenant.
	var list, usage []time.Duration
	for range b.reads {
		t := time.Now()
		if _, err := st.ListPrompts(ctx, big, store.PromptFilter{Limit: 20}); err != nil {
			return r, err
		}
		list = append(list, time.Since(t))
		t = time.Now()
		if _, err := st.Usage(ctx, big, time.Now().Add(-30*24*time.Hour), time.Now(), "model"); err != nil {
			return r, err
		}
		usage = append(usage, time.Since(t))
	}
	r.listP50, r.listP99 = pct(list, 50), pct(list, 99)
	r.usageP50, r.usageP99 = pct(usage, 50), pct(usage, 99)

	runtime.GC()
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	r.heapBytes = int64(m1.HeapInuse) - int64(m0.HeapInuse)
	if r.backends, r.backendBytes, err = backendMemory(ctx, owner, targetOwner); err != nil {
		return r, err
	}

	// Last, since the gateway's backends are named bulkhead too and its
	// rows land in the big tenant: the proxy phase.
	if b.proxy != nil {
		p, err := b.proxy.measure(ctx, a, orgs)
		if err != nil {
			return r, fmt.Errorf("proxy phase: %w", err)
		}
		r.proxy = &p
	}
	return r, nil
}

// seedPlaced inserts n rows of org into schema.prompts of pool, spread
// over 30 days (each row its own time: a LATERAL that does not name g
// would be computed once), as the owner in org's context.
func seedPlaced(ctx context.Context, pool *pgxpool.Pool, schema string, org uuid.UUID, n int64) error {
	for n > 0 {
		m := min(n, 200000)
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT set_config('app.current_tenant_id', $1, true)`, org.String()); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO `+schema+`.prompts (organization_id, id, request_id, endpoint, model,
				prompt_text, response, prompt_tokens, completion_tokens, usage_tokens, usage_source, status, latency_ms, created_at)
				SELECT $1, `+schema+`.prompts_row_id(c.t, gen_random_uuid()), 'seed-' || g, '/v1/chat/completions', 'model-' || (g % 5),
					'{"messages":[{"role":"user","content":"seeded prompt ' || g || '"}]}', 'seeded answer', 20, 30, 50, 'upstream', 200, 40, c.t
				FROM generate_series(1, $2::bigint) g, LATERAL (SELECT now() - ((g * 7919) % 2592000) * interval '1 second' AS t) c`, org, m)
			return err
		})
		if err != nil {
			return fmt.Errorf("seeding %s.prompts: %w", schema, err)
		}
		n -= m
	}
	return nil
}

func benchRecord(org uuid.UUID, run string, i int) store.LogRecord {
	return store.LogRecord{
		OrgID: org, RequestID: fmt.Sprintf("bench-%s-%d", run, i), Endpoint: "/v1/chat/completions", Model: "gpt-4o-mini",
		Prompt:       `{"messages":[{"role":"user","content":"a benchmark prompt of a few words"}]}`,
		Response:     "a benchmark answer of a few words",
		PromptTokens: 12, CompletionTokens: 20, TotalTokens: 32, UsageSource: "upstream", Status: 200, Latency: 40 * time.Millisecond,
	}
}

func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, (len(s)*p+99)/100-1)]
}

// backendMemory sums the private memory (RssAnon) of the gateway's
// PostgreSQL backends (application_name bulkhead, the app role's pools)
// in the main database and the target; 0 where /proc cannot be read.
func backendMemory(ctx context.Context, pools ...*pgxpool.Pool) (int, int64, error) {
	var n int
	var total int64
	for _, pool := range pools {
		if pool == nil {
			continue
		}
		rows, err := pool.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE application_name = 'bulkhead' AND datname = current_database()`)
		if err != nil {
			return 0, 0, err
		}
		pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			return 0, 0, err
		}
		for _, pid := range pids {
			n++
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "RssAnon:"); ok {
					kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
					total += kb << 10
				}
			}
		}
	}
	return n, total, nil
}
