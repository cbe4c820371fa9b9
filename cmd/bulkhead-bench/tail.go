package main

import (
	"bufio"
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
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

// tail measures the latency tail alone (issue 17): the open-loop phase at
// one fixed rate and streaming time to first byte, the floor and the
// gateway (auth, Redis limits, request log: everything on) side by side in
// many short alternating rounds, so that the machine's drift falls on both
// alike. Each round runs direct, then the floor and the gateway in an order
// that alternates; the figure to read is the gateway's added p99 over the
// floor's, round by round, and their median. Time to first byte
// interleaves the three targets request by request.
//
// -env adds settings to the gateway's environment (GODEBUG=gctrace=1 goes
// to its stderr, which -gateway-stderr keeps); -trace saves a runtime
// trace (go tool trace) of the gateway during its phase of the first
// round.
func tail(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tail", flag.ContinueOnError)
	bin := fs.String("bin", "bin", "folder with the bulkhead and mockllm binaries")
	rate := fs.Int("rate", 1000, "open-loop requests per second")
	d := fs.Duration("duration", 5*time.Second, "length of each open-loop phase")
	rounds := fs.Int("rounds", 6, "rounds of direct, floor and gateway")
	conns := fs.Int("conns", 50, "connections (and vegeta workers) of the open-loop phase")
	streams := fs.Int("streams", 300, "streams per target per round of the time-to-first-byte phase (0: none)")
	traceFile := fs.String("trace", "", "save a runtime trace of the gateway's first open-loop phase to this file")
	cpuFile := fs.String("cpu-profile", "", "save a CPU profile of the gateway's second open-loop phase to this file (with -rounds 2 or more)")
	stderrFile := fs.String("gateway-stderr", "", "keep the gateway's stderr (its logs, GODEBUG output) in this file")
	var extra, compare envFlags
	binB := fs.String("compare-bin", "", "run a second gateway, bulkhead B, from the bulkhead binary in this folder (an older build, say), measured in the same rounds; -compare may add to its environment")
	fs.Var(&compare, "compare", "NAME=VALUE: run a second gateway, bulkhead B, with this added to its environment (repeatable), measured in the same rounds")
	fs.Var(&extra, "env", "NAME=VALUE added to the gateway's environment (repeatable), e.g. GODEBUG=gctrace=1")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rounds < 1 || *rate < 1 {
		return fmt.Errorf("-rounds and -rate must be at least 1")
	}
	cfg, err := config.Load("", os.LookupEnv)
	if err != nil {
		return err
	}
	key, err := benchKey(ctx, cfg, 100_000_000)
	if err != nil {
		return fmt.Errorf("creating the bench key (is `make services` done?): %w", err)
	}
	rig, err := startFloor(ctx, *bin, *conns)
	if err != nil {
		return err
	}
	defer rig.stop()
	mock, floor := rig.mock, rig.floor
	listen, admin := freeAddr(), freeAddr()
	spoolDir := filepath.Join(os.TempDir(), fmt.Sprintf("bulkhead-bench-tail-spool-%d", os.Getpid()))
	defer os.RemoveAll(spoolDir)
	env := append([]string{
		"BULKHEAD_LISTEN=" + listen, "BULKHEAD_ADMIN_LISTEN=" + admin, "BULKHEAD_CONTROL_LISTEN=",
		"BULKHEAD_UPSTREAM_URL=http://" + mock.addr + "/v1", "BULKHEAD_LOG_LEVEL=info", "BULKHEAD_SPOOL_DIR=" + spoolDir,
	}, extra...)
	gw, err := startGatewayTo(ctx, *bin, listen, env, *stderrFile)
	if err != nil {
		return err
	}
	defer gw.stop()

	type target struct {
		name, url, key, metrics string
		pid                     int
	}
	direct := target{name: "direct", url: "http://" + mock.addr + "/v1/chat/completions", pid: mock.cmd.Process.Pid}
	fl := target{name: "floor", url: "http://" + floor.addr + "/v1/chat/completions", pid: floor.cmd.Process.Pid}
	others := []target{fl, {"bulkhead", "http://" + listen + "/v1/chat/completions", key, "http://" + admin + "/metrics", gw.cmd.Process.Pid}}
	if len(compare) > 0 || *binB != "" {
		listenB, adminB := freeAddr(), freeAddr()
		spoolB := spoolDir + "-b"
		defer os.RemoveAll(spoolB)
		envB := append(append([]string{
			"BULKHEAD_LISTEN=" + listenB, "BULKHEAD_ADMIN_LISTEN=" + adminB, "BULKHEAD_CONTROL_LISTEN=",
			"BULKHEAD_UPSTREAM_URL=http://" + mock.addr + "/v1", "BULKHEAD_LOG_LEVEL=info", "BULKHEAD_SPOOL_DIR=" + spoolB,
		}, extra...), compare...)
		gwB, err := startGateway(ctx, cmp.Or(*binB, *bin), listenB, envB)
		if err != nil {
			return err
		}
		defer gwB.stop()
		others = append(others, target{"bulkhead B", "http://" + listenB + "/v1/chat/completions", key, "http://" + adminB + "/metrics", gwB.cmd.Process.Pid})
	}
	for _, t := range append([]target{direct}, others...) { // warm up pools and caches
		attack(t.url, headers(t.key), vegeta.Rate{Freq: 200, Per: time.Second}, 2*time.Second, *conns)
	}

	fmt.Printf("# bulkhead-bench tail  %s  %d RPS open loop, %s phases, %d connections; gateway env: %s; bulkhead B adds: %s, runs %s\n\n",
		time.Now().UTC().Format(time.RFC3339), *rate, *d, *conns, strings.Join(extra, " "), strings.Join(compare, " "), cmp.Or(*binB, *bin))
	fmt.Printf("Each round runs direct, then the others in an order that rotates. Added = latency minus direct's in the same round; " +
		"ratio = added p99 over the floor's in the same round. CPU/req is the target process's; GCs its collections during the phase.\n\n" +
		"| round | target | p50 | p99 | added p50 | added p99 | p99 ratio | CPU/req | GCs | errors |\n" +
		"|---|---|---|---|---|---|---|---|---|---|\n")
	ratios := map[string][]float64{}
	pooled := map[string]*vegeta.Metrics{}
	for _, t := range append([]target{direct}, others...) {
		pooled[t.name] = new(vegeta.Metrics)
	}
	for round := 1; round <= *rounds; round++ {
		dm := attackPooled(direct.url, nil, *rate, *d, *conns, pooled[direct.name])
		fmt.Printf("| %d | direct | %s | %s | | | | | | %s |\n", round, ms(dm.Latencies.P50), ms(dm.Latencies.P99), errs(dm))
		ms_ := make(map[string]*vegeta.Metrics, len(others))
		cpu := map[string]float64{}
		gcs := map[string]float64{}
		for k := range others {
			t := others[(k+round-1)%len(others)]
			gc0 := metricValue(t.metrics, "go_gc_duration_seconds_count")
			before := sampleCPU(t.pid)
			var traced chan error
			if file, path := profileOf(round, *traceFile, *cpuFile); file != "" && t.name == "bulkhead" {
				traced = make(chan error, 1)
				go func() { traced <- fetchProfile(admin, path, *d-time.Second, file) }()
			}
			m := attackPooled(t.url, headers(t.key), *rate, *d, *conns, pooled[t.name])
			cpu[t.name], _, _, _ = before.perRequest(sampleCPU(t.pid), m.Requests)
			gcs[t.name] = metricValue(t.metrics, "go_gc_duration_seconds_count") - gc0
			ms_[t.name] = m
			if traced != nil {
				if err := <-traced; err != nil {
					fmt.Fprintln(os.Stderr, "trace:", err)
				}
			}
		}
		floorAdded := ms_["floor"].Latencies.P99 - dm.Latencies.P99
		for _, t := range others {
			m := ms_[t.name]
			added := m.Latencies.P99 - dm.Latencies.P99
			ratio := ratioOf(added, floorAdded)
			ratios[t.name] = append(ratios[t.name], ratio)
			gc := ""
			if t.metrics != "" {
				gc = fmt.Sprintf("%.0f", gcs[t.name])
			}
			fmt.Printf("| %d | %s | %s | %s | %s | %s | %.2f | %.1f µs | %s | %s |\n", round, t.name, ms(m.Latencies.P50), ms(m.Latencies.P99),
				ms(m.Latencies.P50-dm.Latencies.P50), ms(added), ratio, cpu[t.name], gc, errs(m))
		}
	}
	for _, m := range pooled {
		m.Close()
	}
	dp := pooled[direct.name].Latencies
	fmt.Printf("\nAll rounds pooled (%d requests each):\n\n| target | p50 | p99 | added p50 | added p99 | p99 ratio | per-round p99 ratios: median (range) |\n|---|---|---|---|---|---|---|\n"+
		"| direct | %s | %s | | | | |\n", pooled[direct.name].Requests, ms(dp.P50), ms(dp.P99))
	floorPooled := pooled["floor"].Latencies.P99 - dp.P99
	for _, t := range others {
		l := pooled[t.name].Latencies
		per := "-"
		if r := slices.DeleteFunc(ratios[t.name], math.IsNaN); len(r) > 0 {
			per = fmt.Sprintf("%.2f (%.2f to %.2f; %d of %d rounds)", median(r), slices.Min(r), slices.Max(r), len(r), *rounds)
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %.2f | %s |\n", t.name, ms(l.P50), ms(l.P99), ms(l.P50-dp.P50), ms(l.P99-dp.P99),
			ratioOf(l.P99-dp.P99, floorPooled), per)
	}

	if *streams > 0 {
		fmt.Printf("\n## Streaming time to first byte: %d streams per target per round, the targets interleaved request by request\n\n"+
			"| round | target | p50 | p99 | added p50 | added p99 | p50 minus the floor's |\n|---|---|---|---|---|---|---|\n", *streams)
		all := append([]target{direct}, others...)
		cs := make([]*fasthttp.Client, len(all))
		for i := range cs {
			cs[i] = &fasthttp.Client{StreamResponseBody: true, MaxConnsPerHost: 4}
		}
		gaps := map[string][]float64{}
		for round := 1; round <= *rounds; round++ {
			ds := make([][]time.Duration, len(all))
			for range *streams {
				for i, t := range all {
					if v, ok := firstByte(cs[i], t.url, t.key); ok {
						ds[i] = append(ds[i], v)
					}
				}
			}
			q := make([][2]time.Duration, len(all))
			for i := range ds {
				q[i] = quantiles(ds[i])
			}
			fmt.Printf("| %d | direct | %s | %s | | | |\n", round, ms(q[0][0]), ms(q[0][1]))
			for i, t := range all[1:] {
				i++
				gap := q[i][0] - q[1][0]
				gaps[t.name] = append(gaps[t.name], float64(gap)/float64(time.Millisecond))
				fmt.Printf("| %d | %s | %s | %s | %s | %s | %s |\n", round, t.name, ms(q[i][0]), ms(q[i][1]),
					ms(q[i][0]-q[0][0]), ms(q[i][1]-q[0][1]), ms(gap))
			}
		}
		fmt.Println()
		for _, t := range others[1:] {
			g := gaps[t.name]
			fmt.Printf("%s: p50 time to first byte minus the floor's, median %.3f ms (rounds from %.3f to %.3f).\n", t.name, median(g), slices.Min(g), slices.Max(g))
		}
	}
	return nil
}

// ratioOf is a/b, NaN unless b is positive: a round whose floor added
// nothing measurable to direct's p99 has no ratio.
func ratioOf(a, b time.Duration) float64 {
	if b <= 0 {
		return math.NaN()
	}
	return float64(a) / float64(b)
}

// attackPooled runs one open-loop phase and adds its results to pool too.
func attackPooled(url string, h http.Header, rate int, d time.Duration, conns int, pool *vegeta.Metrics) *vegeta.Metrics {
	tr := vegeta.NewStaticTargeter(vegeta.Target{Method: "POST", URL: url, Body: []byte(chatBody), Header: h})
	a := vegeta.NewAttacker(vegeta.KeepAlive(true), vegeta.Connections(conns), vegeta.MaxConnections(conns),
		vegeta.Timeout(10*time.Second), vegeta.Workers(uint64(conns)))
	var m vegeta.Metrics
	for res := range a.Attack(tr, vegeta.Rate{Freq: rate, Per: time.Second}, d, "bench") {
		m.Add(res)
		pool.Add(res)
	}
	m.Close()
	return &m
}

// firstByte sends one streaming chat request and returns the time until
// the first byte of its body arrives; the rest is drained so the
// connection is reused.
func firstByte(c *fasthttp.Client, url, key string) (time.Duration, bool) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(url)
	req.Header.SetMethod("POST")
	req.Header.SetContentType("application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.SetBodyString(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	start := time.Now()
	if err := c.Do(req, resp); err != nil {
		return 0, false
	}
	defer resp.CloseBodyStream() //nolint:errcheck // done
	r := resp.BodyStream()
	if r == nil {
		return 0, false
	}
	var b [6]byte
	if _, err := r.Read(b[:]); err != nil {
		return 0, false
	}
	v := time.Since(start)
	io.Copy(io.Discard, r) //nolint:errcheck // drain to reuse the connection
	return v, true
}

// quantiles returns the p50 and p99 of ds (zeros if empty).
func quantiles(ds []time.Duration) [2]time.Duration {
	if len(ds) == 0 {
		return [2]time.Duration{}
	}
	slices.Sort(ds)
	return [2]time.Duration{ds[len(ds)/2], ds[len(ds)*99/100]}
}

// metricValue reads one unlabelled series from a Prometheus text page;
// 0 if it cannot.
func metricValue(url, name string) float64 {
	code, body, err := fasthttp.GetTimeout(nil, url, 5*time.Second)
	if err != nil || code != 200 {
		return 0
	}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if n, v, ok := strings.Cut(sc.Text(), " "); ok && n == name {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// profileOf says which profile to take of the gateway's phase of round:
// the trace in the first, the CPU profile in the second; "" for none.
func profileOf(round int, traceFile, cpuFile string) (file, path string) {
	switch {
	case round == 1 && traceFile != "":
		return traceFile, "trace"
	case round == 2 && cpuFile != "":
		return cpuFile, "profile"
	}
	return "", ""
}

// fetchProfile saves d of the gateway's profile (trace or profile) from
// its admin listener's /debug/pprof/.
func fetchProfile(admin, path string, d time.Duration, file string) error {
	url := fmt.Sprintf("http://%s/debug/pprof/%s?seconds=%d", admin, path, max(1, int(d.Seconds())))
	code, body, err := fasthttp.GetTimeout(nil, url, d+30*time.Second)
	if err != nil {
		return err
	}
	if code != 200 {
		return fmt.Errorf("%s: status %d", url, code)
	}
	return os.WriteFile(file, body, 0o600)
}
