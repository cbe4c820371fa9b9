package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
	"github.com/valyala/fasthttp"

	"github.com/bulkheadhq/bulkhead/config"
)

// keysBench measures key authentication at scale (issue 17): a Zipf mix
// of callers over many keys in many organizations, against the floor
// forwarder in the same run. The keys come from `bulkhead-bench seed`
// (run here when the keys file is missing or short), so the gateway finds
// them the way it finds real ones: in process (L1), in Redis (L2) or in
// PostgreSQL (L3).
//
// Each gateway phase starts a fresh gateway process with the Redis auth
// entries deleted, so every phase starts with cold caches and the same
// key draws (one seed per round) whichever binary runs: -compare DIR runs
// a second build (say, main's) in the same rounds, alternating which goes
// first, for a before-and-after in one run.
//
//	bulkhead-bench keys -orgs 10000 -keys 1000000 -zipf 1.1 -duration 10s -rounds 3 [-compare DIR]
func keysBench(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("keys", flag.ContinueOnError)
	bin := fs.String("bin", "bin", "folder with the bulkhead and mockllm binaries")
	compare := fs.String("compare", "", "folder with a second bulkhead binary measured in the same rounds (empty: none)")
	norgs := fs.Int("orgs", 10000, "organizations to seed the keys over")
	nkeys := fs.Int("keys", 1000000, "API keys drawn from")
	keysFile := fs.String("keys-file", filepath.Join(os.TempDir(), "bulkhead-bench-keys.txt"), "the seeded keys' secrets; seeded (prefix keysbench) when missing or shorter than -keys")
	zipf := fs.Float64("zipf", 1.1, "Zipf exponent of the callers (above 1); 1.1 over 500,000 keys sends 80% of the requests from 1% of the keys")
	d := fs.Duration("duration", 10*time.Second, "length of each phase")
	conns := fs.Int("conns", 50, "connections (closed loop)")
	rounds := fs.Int("rounds", 3, "rounds")
	warm := fs.Duration("warm-l2", 0, "if set, a throwaway gateway first runs the Zipf mix (other draws) for this long, and Redis keeps its auth entries from then on: each phase is a replica joining a running fleet (cold L1, warm L2); 0: every phase starts with L2 empty too")
	mixes := fs.String("mixes", "one key,zipf", "the gateway phases of a round, in order: one key (every request with the same key) and zipf (the mix); one key goes first by default, since with the request log on PostgreSQL is still busy with the mix's 10,000 tenants for a while after it")
	requestLog := fs.Bool("request-log", true, "the gateway writes its request log (every feature on); false isolates authentication")
	fs.StringVar(&cpuProfile, "cpu-profile", "", "save each gateway Zipf phase's CPU profile to PREFIX-N.pb.gz (empty: none)")
	var extra envFlags
	fs.Var(&extra, "env", "NAME=VALUE added to the gateways' environment (repeatable), e.g. BULKHEAD_AUTH_CACHE_SIZE=200000")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *zipf <= 1 || *nkeys < 2 || *norgs < 1 || *rounds < 1 {
		return fmt.Errorf("keys: want -zipf above 1, -keys >= 2, -orgs >= 1, -rounds >= 1")
	}
	for _, mix := range strings.Split(*mixes, ",") {
		if mix != "zipf" && mix != "one key" {
			return fmt.Errorf("keys: -mixes takes zipf and one key, got %q", mix)
		}
	}
	cfg, err := config.Load("", os.LookupEnv)
	if err != nil {
		return err
	}
	keys, err := keysFor(ctx, *keysFile, *nkeys, *norgs)
	if err != nil {
		return err
	}
	one, err := benchKey(ctx, cfg, 100_000_000)
	if err != nil {
		return fmt.Errorf("creating the one-key reference (is `make services` done?): %w", err)
	}

	rig, err := startFloor(ctx, *bin, *conns)
	if err != nil {
		return err
	}
	defer rig.stop()
	mock, floor, floorURL := rig.mock, rig.floor, rig.url

	builds := []struct{ name, dir string }{{"this build", *bin}}
	if *compare != "" {
		builds = append(builds, struct{ name, dir string }{"compared (" + *compare + ")", *compare})
	}
	if *warm > 0 {
		tr := func(url string) vegeta.Targeter { return zipfTargeter(url, keys, *zipf, 0) }
		if err := dropAuthEntries(ctx, cfg); err != nil {
			return err
		}
		r, err := keysPhase(ctx, cfg, *bin, mock.addr, *requestLog, extra, tr, one, *warm, *conns, false)
		if err != nil {
			return err
		}
		fmt.Printf("L2 warmed by %d requests (%.0f RPS) over %s\n", r.m.Requests, r.m.Throughput, *warm)
	}
	fmt.Printf("# bulkhead-bench keys  %s  %d keys over %d organizations, Zipf s=%g, %d connections, %s phases, request log %v, cores=2 (shared)\n\n",
		time.Now().UTC().Format(time.RFC3339), len(keys), *norgs, *zipf, *conns, *d, *requestLog)
	l2 := "Redis's auth entries deleted (cold L1 and L2)"
	if *warm > 0 {
		l2 = "Redis's auth entries kept (cold L1, warm L2)"
	}
	fmt.Printf("Each gateway phase is a fresh process with %s. Shares are of requests: "+
		"L1 in process (negative entries included), L2 Redis, L3 keys looked up in PostgreSQL; the rest shared a concurrent look-up of the same key. "+
		"PG queries: transactions that reached PostgreSQL for keys (a batch is one).\n\n", l2)
	fmt.Printf("| round | target | RPS | x floor | p50 | p99 | L1 | L2 | L3 | PG keys/s | PG queries/s | gateway CPU/req | PostgreSQL CPU/req | RSS MiB | errors |\n" +
		"|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	ratios := make([][]float64, len(builds))
	oneRatios := make([][]float64, len(builds))
	maxRSS := make([]float64, len(builds))
	for round := 1; round <= *rounds; round++ {
		before := sampleCPU(floor.cmd.Process.Pid)
		fm := attack(floorURL, headers(""), vegeta.Rate{Freq: 0}, *d, *conns)
		own, pg, _, _ := before.perRequest(sampleCPU(floor.cmd.Process.Pid), fm.Requests)
		fmt.Printf("| %d | floor | %.0f | 1.00 | %s | %s | | | | | | %.1f µs | %.1f µs | %.1f | %s |\n", round, fm.Throughput,
			ms(fm.Latencies.P50), ms(fm.Latencies.P99), own, pg, rss(floor.cmd.Process.Pid), errs(fm))
		for i := range builds {
			b := builds[(i+round+1)%len(builds)] // alternate which build goes first
			bi := (i + round + 1) % len(builds)
			for _, mix := range strings.Split(*mixes, ",") {
				var tr func(string) vegeta.Targeter // nil: the one key
				if mix == "zipf" {
					tr = func(url string) vegeta.Targeter { return zipfTargeter(url, keys, *zipf, uint64(round)) }
				}
				r, err := keysPhase(ctx, cfg, b.dir, mock.addr, *requestLog, extra, tr, one, *d, *conns, *warm == 0)
				if err != nil {
					return err
				}
				x := r.m.Throughput / fm.Throughput
				if mix == "zipf" {
					ratios[bi] = append(ratios[bi], x)
				} else {
					oneRatios[bi] = append(oneRatios[bi], x)
				}
				maxRSS[bi] = max(maxRSS[bi], r.rss)
				fmt.Printf("| %d | %s, %s | %.0f | %.2f | %s | %s | %s | %s | %s | %.0f | %.0f | %.1f µs | %.1f µs | %.1f | %s |\n",
					round, b.name, mix, r.m.Throughput, x, ms(r.m.Latencies.P50), ms(r.m.Latencies.P99),
					share(r.l1, r.m.Requests), share(r.l2, r.m.Requests), share(r.l3, r.m.Requests),
					r.l3/r.m.Duration.Seconds(), r.queries/r.m.Duration.Seconds(), r.cpu, r.pgCPU, r.rss, errs(r.m))
			}
		}
	}
	fmt.Println()
	for i, b := range builds {
		fmt.Printf("- %s: Zipf mix %s of the floor, one key %s; gateway RSS at most %.1f MiB\n",
			b.name, spread(ratios[i]), spread(oneRatios[i]), maxRSS[i])
	}
	return nil
}

// cpuProfile is -cpu-profile; profiles counts the profiles saved.
var (
	cpuProfile string
	profiles   int
)

// keysResult is one gateway phase's figures: the load's metrics, the
// requests answered by each tier, PostgreSQL queries, CPU per request of
// the gateway and of PostgreSQL, and the gateway's RSS at the end.
type keysResult struct {
	m                   *vegeta.Metrics
	l1, l2, l3, queries float64
	cpu, pgCPU, rss     float64
}

// keysPhase starts a gateway of dir with a cold L1 (and L2, with dropL2),
// drives it with tr (nil: the one key) and stops it.
func keysPhase(ctx context.Context, cfg config.Config, dir, upstream string, requestLog bool, extra []string,
	tr func(url string) vegeta.Targeter, one string, d time.Duration, conns int, dropL2 bool) (keysResult, error) {
	if dropL2 {
		if err := dropAuthEntries(ctx, cfg); err != nil {
			return keysResult{}, err
		}
	}
	listen, admin := freeAddr(), freeAddr()
	spool := filepath.Join(os.TempDir(), fmt.Sprintf("bulkhead-bench-keys-spool-%d", os.Getpid()))
	defer os.RemoveAll(spool)
	env := append([]string{
		"BULKHEAD_LISTEN=" + listen, "BULKHEAD_ADMIN_LISTEN=" + admin, "BULKHEAD_CONTROL_LISTEN=",
		"BULKHEAD_UPSTREAM_URL=http://" + upstream + "/v1", "BULKHEAD_LOG_LEVEL=info",
		"BULKHEAD_SPOOL_DIR=" + spool, "BULKHEAD_REQUEST_LOG=" + strconv.FormatBool(requestLog),
	}, extra...)
	if !requestLog {
		env = append(env, "BULKHEAD_SPOOL_DIR=")
	}
	gw, err := startGateway(ctx, dir, listen, env)
	if err != nil {
		return keysResult{}, err
	}
	defer gw.stop()
	url := "http://" + listen + "/v1/chat/completions"
	metrics := "http://" + admin + "/metrics"
	targeter := vegeta.NewStaticTargeter(vegeta.Target{Method: "POST", URL: url, Body: []byte(chatBody), Header: headers(one)})
	if tr != nil {
		targeter = tr(url)
	}
	pid := gw.cmd.Process.Pid
	c0, cpu0 := scrape(metrics), sampleCPU(pid)
	profiled := make(chan struct{})
	if cpuProfile != "" && tr != nil && d > 2*time.Second {
		profiles++
		go func(name string) {
			defer close(profiled)
			url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", admin, int((d - time.Second).Seconds()))
			if code, body, err := fasthttp.GetTimeout(nil, url, d+10*time.Second); err == nil && code == 200 {
				os.WriteFile(name, body, 0o600) //nolint:errcheck // a profile is a bonus
			}
		}(fmt.Sprintf("%s-%d.pb.gz", cpuProfile, profiles))
	} else {
		close(profiled)
	}
	m := attackWith(targeter, vegeta.Rate{Freq: 0}, d, conns)
	<-profiled
	time.Sleep(300 * time.Millisecond)
	c1, cpu1 := scrape(metrics), sampleCPU(pid)
	delta := func(name string) float64 {
		return c1["bulkhead_auth_"+name+"_total"] - c0["bulkhead_auth_"+name+"_total"]
	}
	r := keysResult{m: m, rss: rss(pid),
		l1: delta("l1_hits") + delta("l1_negative_hits"), l2: delta("l2_hits"), l3: delta("l3_lookups")}
	r.queries = r.l3 // a build without batches sends one query per key
	if _, ok := c1["bulkhead_auth_l3_queries_total"]; ok {
		r.queries = delta("l3_queries")
	}
	r.cpu, r.pgCPU, _, _ = cpu0.perRequest(cpu1, m.Requests)
	return r, nil
}

// dropAuthEntries deletes the L2 entries of keys (bulkhead:auth:{hash}),
// so that a phase starts cold whatever the phase before it looked up.
func dropAuthEntries(ctx context.Context, cfg config.Config) error {
	if cfg.RedisURL.Reveal() == "" {
		return nil
	}
	ro, err := cfg.RedisOptions()
	if err != nil {
		return err
	}
	rdb := ro.NewClient()
	defer rdb.Close()
	iter := rdb.Scan(ctx, 0, "bulkhead:auth:{*", 10000).Iterator()
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := rdb.Unlink(ctx, batch...).Err()
		batch = batch[:0]
		return err
	}
	for iter.Next(ctx) {
		if batch = append(batch, iter.Val()); len(batch) == 1000 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("clearing the auth cache in redis: %w", err)
	}
	return flush()
}

// keysFor returns n keys of file, seeding n keys over orgs organizations
// (prefix keysbench, no request-log rows) into it first when it holds
// fewer.
func keysFor(ctx context.Context, file string, n, orgs int) ([]string, error) {
	if keys, err := readKeys(file); err == nil && len(keys) >= n {
		return keys[:n], nil
	}
	fmt.Printf("seeding %d keys over %d organizations into %s\n", n, orgs, file)
	if err := seed(ctx, []string{"-orgs", strconv.Itoa(orgs), "-keys", strconv.Itoa(n), "-rows", "0",
		"-keys-file", file, "-prefix", "keysbench"}); err != nil {
		return nil, err
	}
	keys, err := readKeys(file)
	if err != nil {
		return nil, err
	}
	if len(keys) < n {
		return nil, fmt.Errorf("%s holds %d keys, want %d", file, len(keys), n)
	}
	return keys[:n], nil
}

func share(n float64, of uint64) string {
	if of == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*n/float64(of))
}

// spread is ratios' range and median, "-" for none.
func spread(v []float64) string {
	if len(v) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f–%.2fx (median %.2f)", slices.Min(v), slices.Max(v), median(v))
}
