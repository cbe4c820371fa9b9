package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
	"github.com/valyala/fasthttp"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway/apikey"
	"github.com/bulkheadhq/bulkhead/store"
)

const chatBody = `{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in five words."}]}`

type benchFlags struct {
	bin      string
	duration time.Duration
	conns    int
	rates    string
	streams  int
	rounds   int
	pairs    int
	pairDur  time.Duration
}

// proc is a child process that announced "… listening on ADDR".
type proc struct {
	cmd  *exec.Cmd
	addr string
}

func start(ctx context.Context, env []string, name string, args ...string) (*proc, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = orphanKill()
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = nil
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	addrCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			if i := strings.Index(line, "listening on "); i >= 0 && !sent {
				addrCh <- strings.Fields(line[i+len("listening on "):])[0]
				sent = true
			}
		}
	}()
	select {
	case addr := <-addrCh:
		return &proc{cmd: cmd, addr: addr}, nil
	case <-time.After(15 * time.Second):
		cmd.Process.Kill() //nolint:errcheck // giving up
		return nil, fmt.Errorf("%s did not announce its address", name)
	}
}

func (p *proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // best effort
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }() //nolint:errcheck // exit status irrelevant
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill() //nolint:errcheck // stuck
	}
}

// orphanKill makes a child die with the bench (Linux): a run cut short,
// by a closed pipe say, leaves no servers holding its ports.
func orphanKill() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// rss returns the resident set size of a process in MiB.
func rss(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return -1
}

func runBench(ctx context.Context, args []string) error {
	var f benchFlags
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.StringVar(&f.bin, "bin", "bin", "folder with the bulkhead and mockllm binaries")
	fs.DurationVar(&f.duration, "duration", 5*time.Second, "length of each load phase")
	fs.IntVar(&f.conns, "conns", 50, "connections of the closed-loop phase")
	fs.StringVar(&f.rates, "rates", "200,1000", "open-loop request rates")
	fs.IntVar(&f.streams, "streams", 1000, "concurrent streams for the memory phase")
	fs.IntVar(&f.rounds, "rounds", 2, "times each configuration runs, alternating")
	fs.IntVar(&f.pairs, "pairs", 20, "request log on/off pairs of the paired phase")
	fs.DurationVar(&f.pairDur, "pair-duration", 3*time.Second, "length of each half of a pair")
	if err := fs.Parse(args); err != nil {
		return err
	}

	cfg, err := config.Load("", os.LookupEnv)
	if err != nil {
		return err
	}
	key, err := benchKey(ctx, cfg, 100_000_000)
	if err != nil {
		return fmt.Errorf("creating the bench key (is `make services` done?): %w", err)
	}
	unlimited, err := benchKey(ctx, cfg, 0) // no limit: admission makes no Redis call
	if err != nil {
		return err
	}

	mock, err := start(ctx, nil, filepath.Join(f.bin, "mockllm"), "-listen", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer mock.stop()
	slow, err := start(ctx, nil, filepath.Join(f.bin, "mockllm"), "-listen", "127.0.0.1:0", "-chunk-delay", "100ms", "-chunks", "100")
	if err != nil {
		return err
	}
	defer slow.stop()
	self, _ := os.Executable()
	floor, err := start(ctx, nil, self, "forward", "-listen", "127.0.0.1:0", "-upstream", mock.addr)
	if err != nil {
		return err
	}
	defer floor.stop()

	routes := filepath.Join(os.TempDir(), "bulkhead-bench-routes.yaml")
	os.WriteFile(routes, []byte("upstreams:\n  - {name: slow, kind: openai, url: \"http://"+slow.addr+"/v1\", models: [slow-stream]}\n"), 0o600)
	gwEnv := []string{
		"BULKHEAD_LISTEN=127.0.0.1:18080", "BULKHEAD_UPSTREAM_URL=http://" + mock.addr + "/v1",
		"BULKHEAD_CONFIG=" + routes, "BULKHEAD_LOG_LEVEL=info", "BULKHEAD_ADMIN_LISTEN=127.0.0.1:19090", "BULKHEAD_CONTROL_LISTEN=",
		"BULKHEAD_SPOOL_DIR=" + filepath.Join(os.TempDir(), fmt.Sprintf("bulkhead-bench-spool-%d", os.Getpid())),
	}
	gw, err := startGateway(ctx, f.bin, "127.0.0.1:18080", gwEnv)
	if err != nil {
		return err
	}
	defer gw.stop()
	gwNoLog, err := startGateway(ctx, f.bin, "127.0.0.1:18082", append(gwEnv, "BULKHEAD_LISTEN=127.0.0.1:18082",
		"BULKHEAD_ADMIN_LISTEN=127.0.0.1:19092", "BULKHEAD_CONTROL_LISTEN=", "BULKHEAD_REQUEST_LOG=false", "BULKHEAD_SPOOL_DIR="))
	if err != nil {
		return err
	}
	defer gwNoLog.stop()

	targets := []struct {
		name, url, key string
		pid            int
	}{
		{"direct to mock", "http://" + mock.addr + "/v1/chat/completions", "", mock.cmd.Process.Pid},
		{"bare fasthttp forwarder (floor)", "http://" + floor.addr + "/v1/chat/completions", "", floor.cmd.Process.Pid},
		{"bulkhead: auth + limits + request log", "http://" + gw.addr + "/v1/chat/completions", key, gw.cmd.Process.Pid},
		{"bulkhead: auth + request log, no limits", "http://" + gw.addr + "/v1/chat/completions", unlimited, gw.cmd.Process.Pid},
		{"bulkhead: auth + limits, request log off", "http://" + gwNoLog.addr + "/v1/chat/completions", key, gwNoLog.cmd.Process.Pid},
	}
	for _, t := range targets { // warm up pools and caches
		attack(t.url, headers(t.key), vegeta.Rate{Freq: 200, Per: time.Second}, time.Second, f.conns)
	}
	idleRSS := rss(gw.cmd.Process.Pid)

	fmt.Printf("# bulkhead-bench  %s  GOMAXPROCS=%s cores=2\n\n", time.Now().UTC().Format(time.RFC3339), os.Getenv("GOMAXPROCS"))
	fmt.Printf("## Closed loop, %d connections, %s per run (max throughput)\n\n"+
		"CPU columns: µs of CPU per request used by the process under test, by all PostgreSQL and Redis processes, "+
		"and by the whole machine (load generator, kernel and everything else included); the request log's batches "+
		"are given 300 ms to land before sampling.\n\n"+
		"| target | run | RPS | p50 | p99 | CPU/req | PostgreSQL CPU/req | Redis CPU/req | machine CPU/req | errors |\n|---|---|---|---|---|---|---|---|---|---|\n", f.conns, f.duration)
	best := map[string]float64{}
	for round := 1; round <= f.rounds; round++ {
		for _, t := range targets {
			before := sampleCPU(t.pid)
			m := attack(t.url, headers(t.key), vegeta.Rate{Freq: 0}, f.duration, f.conns)
			time.Sleep(300 * time.Millisecond)
			own, pg, rd, all := before.perRequest(sampleCPU(t.pid), m.Requests)
			fmt.Printf("| %s | %d | %.0f | %s | %s | %.1f µs | %.1f µs | %.1f µs | %.1f µs | %s |\n", t.name, round, m.Throughput,
				ms(m.Latencies.P50), ms(m.Latencies.P99), own, pg, rd, all, errs(m))
			best[t.name] = max(best[t.name], m.Throughput)
		}
	}
	fmt.Printf("\nBest of %d runs, as a share of the floor:\n\n", f.rounds)
	for _, t := range targets[2:] {
		fmt.Printf("- %s: %.0f%% of the floor's throughput\n", t.name, 100*best[t.name]/best[targets[1].name])
	}
	// Not the log on over off: two long phases seconds apart differ by the
	// machine's drift as much as by the log. The paired phase measures it.
	fmt.Printf("- request log on vs off: see the paired phase below\n")

	on, off := targets[2], targets[4]
	if f.pairs > 0 {
		pairLogOnOff(f, on.url, off.url, headers(on.key), [2]int{on.pid, off.pid})
	}

	fmt.Printf("\n## One connection, sequential requests, %s per run\n\n| target | run | p50 | p99 | added p50 vs direct | added p99 vs direct |\n|---|---|---|---|---|---|\n", f.duration)
	for round := 1; round <= f.rounds; round++ {
		var direct *vegeta.Metrics
		for i, t := range targets {
			m := attack(t.url, headers(t.key), vegeta.Rate{Freq: 0}, f.duration, 1)
			if i == 0 {
				direct = m
			}
			fmt.Printf("| %s | %d | %s | %s | %s | %s |\n", t.name, round, ms(m.Latencies.P50), ms(m.Latencies.P99),
				ms(m.Latencies.P50-direct.Latencies.P50), ms(m.Latencies.P99-direct.Latencies.P99))
		}
	}

	for _, rate := range strings.Split(f.rates, ",") {
		n, _ := strconv.Atoi(strings.TrimSpace(rate))
		fmt.Printf("\n## Open loop at %d RPS, %s per run\n\n| target | run | p50 | p99 | added p50 vs direct | added p99 vs direct | errors |\n|---|---|---|---|---|---|---|\n", n, f.duration)
		for round := 1; round <= f.rounds; round++ {
			var direct *vegeta.Metrics
			for i, t := range targets {
				m := attack(t.url, headers(t.key), vegeta.Rate{Freq: n, Per: time.Second}, f.duration, f.conns)
				if i == 0 {
					direct = m
				}
				fmt.Printf("| %s | %d | %s | %s | %s | %s | %s |\n", t.name, round, ms(m.Latencies.P50), ms(m.Latencies.P99),
					ms(m.Latencies.P50-direct.Latencies.P50), ms(m.Latencies.P99-direct.Latencies.P99), errs(m))
			}
		}
	}

	fmt.Printf("\n## Streaming time to first byte (200 sequential streams, 20 chunks each)\n\n| target | run | p50 TTFB | p99 TTFB |\n|---|---|---|---|\n")
	for round := 1; round <= f.rounds; round++ {
		d := ttfb("http://"+mock.addr+"/v1/chat/completions", "", 200)
		fl := ttfb("http://"+floor.addr+"/v1/chat/completions", "", 200)
		g := ttfb("http://"+gw.addr+"/v1/chat/completions", key, 200)
		fmt.Printf("| direct to mock | %d | %s | %s |\n| floor | %d | %s | %s |\n| bulkhead | %d | %s | %s |\n",
			round, ms(d[0]), ms(d[1]), round, ms(fl[0]), ms(fl[1]), round, ms(g[0]), ms(g[1]))
		fmt.Printf("| added by the floor | %d | %s | %s |\n| added by bulkhead | %d | %s | %s |\n",
			round, ms(fl[0]-d[0]), ms(fl[1]-d[1]), round, ms(g[0]-d[0]), ms(g[1]-d[1]))
	}

	fmt.Printf("\n## Gateway resident memory\n\n| state | RSS MiB |\n|---|---|\n| idle after warm-up | %.1f |\n", idleRSS)
	early, late := openStreams(gw.addr, key, f.streams, gw.cmd.Process.Pid)
	fmt.Printf("| %d open streams, 3s in | %.1f |\n| %d open streams, 8s in | %.1f |\n", f.streams, early, f.streams, late)
	return nil
}

// pairLogOnOff measures the request log's cost as the throughput of the
// gateway with it on over the one with it off, in short pairs that
// alternate which goes first. This machine's speed drifts between phases
// seconds apart by as much as the difference measured, so a ratio of two
// long phases says more about the drift than the log; the pairs' median
// and their sums do not. Each half is followed by 300 ms for the log's
// batches to land, so that PostgreSQL's work is not left to the other
// half.
//
// Besides the machine's CPU per request, each half reports its gateway's
// own (pids[0] with the log on, pids[1] off; 0: unknown) and PostgreSQL's:
// where PostgreSQL has cores of its own, as in production, the gateway's
// share is what the log costs the proxy.
//
// Pairs during which the hypervisor took more than quietSteal of the
// cores are listed but left out of the quiet-pairs median: both halves
// are throttled then, which pulls their ratio towards 100%, so leaving
// them out can only make the log look dearer.
func pairLogOnOff(f benchFlags, onURL, offURL string, h http.Header, pids [2]int) {
	fmt.Printf("\n## Request log on vs off: %d pairs of %s each, closed loop at %d connections, alternating which goes first\n\n"+
		"CPU per request counts the 300 ms after each half too, when the log's last batch lands.\n\n"+
		"| pair | log on RPS | log off RPS | on / off | machine CPU/req on | off | gateway CPU/req on | off | PostgreSQL CPU/req on | steal |\n"+
		"|---|---|---|---|---|---|---|---|---|---|\n",
		f.pairs, f.pairDur, f.conns)
	var ratios, quiet, cpuRatios, gwRatios []float64
	var sumOn, sumOff float64
	for i := 1; i <= f.pairs; i++ {
		var rps, cpu, gw, pg, steal [2]float64 // on, off
		for k := range 2 {
			which := (i + k) % 2 // odd pairs start with the log on
			url := onURL
			if which == 1 {
				url = offURL
			}
			before, t0 := sampleCPU(pids[which]), time.Now()
			m := attack(url, h, vegeta.Rate{Freq: 0}, f.pairDur, f.conns)
			time.Sleep(300 * time.Millisecond)
			after := sampleCPU(pids[which])
			gw[which], pg[which], _, cpu[which] = before.perRequest(after, m.Requests)
			steal[which] = before.stealShare(after, time.Since(t0))
			rps[which] = m.Throughput
		}
		ratios = append(ratios, rps[0]/rps[1])
		if stolen := (steal[0] + steal[1]) / 2; stolen <= quietSteal {
			quiet = append(quiet, rps[0]/rps[1])
		}
		cpuRatios = append(cpuRatios, cpu[1]/cpu[0])
		gwRatios = append(gwRatios, gw[1]/gw[0])
		sumOn, sumOff = sumOn+rps[0], sumOff+rps[1]
		fmt.Printf("| %d | %.0f | %.0f | %.1f%% | %.1f µs | %.1f µs | %s | %s | %.1f µs | %.0f%% |\n", i, rps[0], rps[1],
			100*rps[0]/rps[1], cpu[0], cpu[1], procCPU(pids[0], gw[0]), procCPU(pids[1], gw[1]), pg[0], 50*(steal[0]+steal[1]))
	}
	fmt.Printf("\nRequest log on vs off: throughput %.1f%% (median pair; all pairs summed %.1f%%, pairs from %.1f%% to %.1f%%); "+
		"CPU per request, off over on, median pair: machine %.1f%%",
		100*median(ratios), 100*sumOn/sumOff, 100*slices.Min(ratios), 100*slices.Max(ratios), 100*median(cpuRatios))
	if pids[0] > 0 && pids[1] > 0 {
		fmt.Printf(", gateway %.1f%%", 100*median(gwRatios))
	}
	fmt.Println(".")
	if len(quiet) > 0 {
		fmt.Printf("Pairs with at most %.0f%% steal (%d of %d): throughput %.1f%% (median pair).\n",
			100*quietSteal, len(quiet), len(ratios), 100*median(quiet))
	}
}

// quietSteal is the most steal a pair may have to count as quiet.
const quietSteal = 0.05

// procCPU formats a process's CPU per request, "-" if its pid is unknown.
func procCPU(pid int, us float64) string {
	if pid <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f µs", us)
}

func median(v []float64) float64 {
	v = slices.Sorted(slices.Values(v))
	return (v[(len(v)-1)/2] + v[len(v)/2]) / 2
}

// pairs runs the paired phase alone against two gateways already up.
func pairs(args []string) error {
	var f benchFlags
	fs := flag.NewFlagSet("pairs", flag.ContinueOnError)
	on := fs.String("on", "http://127.0.0.1:18080/v1/chat/completions", "the gateway with the request log on")
	off := fs.String("off", "http://127.0.0.1:18082/v1/chat/completions", "the gateway with it off")
	key := fs.String("key", "", "API key, valid on both")
	var pids [2]int
	fs.IntVar(&pids[0], "on-pid", 0, "pid of the gateway with the log on, for its CPU per request (0: not shown)")
	fs.IntVar(&pids[1], "off-pid", 0, "pid of the gateway with the log off")
	fs.IntVar(&f.conns, "conns", 50, "connections")
	fs.IntVar(&f.pairs, "pairs", 20, "pairs")
	fs.DurationVar(&f.pairDur, "pair-duration", 3*time.Second, "length of each half of a pair")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if f.pairs < 1 {
		return fmt.Errorf("-pairs must be at least 1")
	}
	pairLogOnOff(f, *on, *off, headers(*key), pids)
	return nil
}

func startGateway(ctx context.Context, bin, addr string, env []string) (*proc, error) {
	return startGatewayTo(ctx, bin, addr, env, "")
}

// startGatewayTo is startGateway keeping the gateway's stderr in the file
// stderr ("": discarded).
func startGatewayTo(ctx context.Context, bin, addr string, env []string, stderr string) (*proc, error) {
	// A gateway left over from a killed run would answer on addr and be
	// measured in this one's place.
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s is already taken (a gateway of an earlier run?)", addr)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "bulkhead"), "serve")
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = orphanKill()
	devnull, _ := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	cmd.Stdout, cmd.Stderr = devnull, devnull // the access log: written, then discarded
	if stderr != "" {
		f, err := os.Create(stderr)
		if err != nil {
			return nil, err
		}
		defer f.Close() // the child has its own descriptor
		cmd.Stderr = f
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	for i := 0; i < 100; i++ {
		if code, _, err := fasthttp.GetTimeout(nil, "http://"+addr+"/healthz", time.Second); err == nil && code == 200 {
			return &proc{cmd: cmd, addr: addr}, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	cmd.Process.Kill() //nolint:errcheck // giving up
	return nil, fmt.Errorf("gateway did not become healthy")
}

// benchKey creates a key of the "bench" organization. With rpm far above
// what the bench sends, limits are checked but never bite; 0 means none.
func benchKey(ctx context.Context, cfg config.Config, rpm int) (string, error) {
	if _, err := store.Migrate(ctx, cfg.AdminDatabaseURL.Reveal()); err != nil {
		return "", err
	}
	a, err := store.OpenAdmin(ctx, cfg.AdminDatabaseURL.Reveal(), "bench")
	if err != nil {
		return "", err
	}
	defer a.Close()
	org, err := a.OrgByName(ctx, "bench")
	if err != nil {
		if org, err = a.CreateOrg(ctx, "bench"); err != nil {
			return "", err
		}
	}
	key, err := apikey.Generate(org.ID)
	if err != nil {
		return "", err
	}
	_, err = a.CreateKey(ctx, store.NewKey{OrgID: org.ID, Hash: apikey.Hash([]byte(key)), DisplayPrefix: apikey.Display(key),
		Name: "bench", RateLimitPerMinute: rpm, TokensPerMinute: 0})
	return key, err
}

// headers are a chat request's: JSON, and the API key if there is one.
func headers(key string) http.Header {
	h := http.Header{"Content-Type": {"application/json"}}
	if key != "" {
		h.Set("Authorization", "Bearer "+key)
	}
	return h
}

func attack(url string, h http.Header, rate vegeta.Rate, d time.Duration, conns int) *vegeta.Metrics {
	return attackWith(vegeta.NewStaticTargeter(vegeta.Target{Method: "POST", URL: url, Body: []byte(chatBody), Header: h}), rate, d, conns)
}

func attackWith(tr vegeta.Targeter, rate vegeta.Rate, d time.Duration, conns int) *vegeta.Metrics {
	opts := []func(*vegeta.Attacker){vegeta.KeepAlive(true), vegeta.Connections(conns), vegeta.MaxConnections(conns), vegeta.Timeout(10 * time.Second)}
	if rate.Freq == 0 {
		opts = append(opts, vegeta.Workers(uint64(conns)), vegeta.MaxWorkers(uint64(conns)))
	} else {
		opts = append(opts, vegeta.Workers(uint64(conns)))
	}
	a := vegeta.NewAttacker(opts...)
	var m vegeta.Metrics
	for res := range a.Attack(tr, rate, d, "bench") {
		m.Add(res)
	}
	m.Close()
	return &m
}

func errs(m *vegeta.Metrics) string {
	if len(m.Errors) == 0 && m.Success == 1 {
		return "0"
	}
	codes := make([]string, 0, len(m.StatusCodes))
	for c, n := range m.StatusCodes {
		codes = append(codes, fmt.Sprintf("%s×%d", c, n))
	}
	sort.Strings(codes)
	return strings.Join(codes, " ")
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }

// ttfb measures, over n sequential streaming requests, the p50 and p99
// time until the first "data:" byte arrives.
func ttfb(url, key string, n int) [2]time.Duration {
	c := &fasthttp.Client{StreamResponseBody: true, MaxConnsPerHost: 4}
	body := `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	var ds []time.Duration
	for i := 0; i < n; i++ {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI(url)
		req.Header.SetMethod("POST")
		req.Header.SetContentType("application/json")
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		req.SetBodyString(body)
		start := time.Now()
		if err := c.Do(req, resp); err == nil {
			if r := resp.BodyStream(); r != nil {
				buf := make([]byte, 6)
				if _, err := r.Read(buf); err == nil {
					ds = append(ds, time.Since(start))
				}
				var rest bytes.Buffer
				rest.ReadFrom(r) //nolint:errcheck // drain to reuse the connection
			}
			resp.CloseBodyStream() //nolint:errcheck // done
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	if len(ds) == 0 {
		return [2]time.Duration{}
	}
	return [2]time.Duration{ds[len(ds)/2], ds[len(ds)*99/100]}
}

// openStreams holds n slow streams open through the gateway and samples
// its RSS 3s and 8s in (the streams last about 10s).
func openStreams(addr, key string, n, pid int) (early, late float64) {
	c := &fasthttp.Client{StreamResponseBody: true, MaxConnsPerHost: n + 10, ReadTimeout: time.Minute}
	body := `{"model":"slow-stream","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI("http://" + addr + "/v1/chat/completions")
			req.Header.SetMethod("POST")
			req.Header.SetContentType("application/json")
			req.Header.Set("Authorization", "Bearer "+key)
			req.SetBodyString(body)
			if err := c.Do(req, resp); err == nil && resp.BodyStream() != nil {
				var sink bytes.Buffer
				sink.ReadFrom(resp.BodyStream()) //nolint:errcheck // read to the end
				resp.CloseBodyStream()           //nolint:errcheck // done
			}
		}()
	}
	time.Sleep(3 * time.Second)
	early = rss(pid)
	time.Sleep(5 * time.Second)
	late = rss(pid)
	wg.Wait()
	return early, late
}

// load drives one target, closed loop (rate 0) or at a fixed rate, and
// prints vegeta's summary: for profiling one process while it works.
func load(args []string) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	url := fs.String("url", "", "target URL (POST, a chat completion)")
	key := fs.String("key", "", "API key, if any")
	keysFile := fs.String("keys-file", "", "API keys, one per line (bulkhead-bench seed -keys-file): each request takes one, drawn by -zipf")
	zipf := fs.Float64("zipf", 1.1, "with -keys-file, the Zipf exponent s of the key drawn (rank k drawn in proportion to k^-s, the ranks shuffled over the file); 1.1 over 500,000 keys sends 80% of the requests from 1% of the keys")
	metrics := fs.String("metrics", "", "the gateway's metrics URL (http://127.0.0.1:9090/metrics): print where its API keys were found (in process, Redis, PostgreSQL) during the load")
	d := fs.Duration("duration", 10*time.Second, "how long")
	conns := fs.Int("conns", 50, "connections")
	rate := fs.Int("rate", 0, "requests per second; 0: closed loop")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tr := vegeta.NewStaticTargeter(vegeta.Target{Method: "POST", URL: *url, Body: []byte(chatBody), Header: headers(*key)})
	if *keysFile != "" {
		keys, err := readKeys(*keysFile)
		if err != nil {
			return err
		}
		if *zipf <= 1 {
			return fmt.Errorf("-zipf must be above 1, got %g", *zipf)
		}
		tr = zipfTargeter(*url, keys, *zipf, 17)
	}
	before, err := authSources(*metrics)
	if err != nil {
		return err
	}
	m := attackWith(tr, vegeta.Rate{Freq: *rate, Per: time.Second}, *d, *conns)
	fmt.Printf("requests %d  rps %.0f  p50 %s  p99 %s  errors %s\n", m.Requests, m.Throughput, ms(m.Latencies.P50), ms(m.Latencies.P99), errs(m))
	if *metrics == "" {
		return nil
	}
	after, err := authSources(*metrics)
	if err != nil {
		return err
	}
	var total float64
	for i := range after {
		after[i] -= before[i]
		total += after[i]
	}
	if total > 0 {
		fmt.Printf("keys found: in process %.1f%%  Redis %.1f%%  PostgreSQL %.1f%%  (%.0f look-ups)\n",
			100*after[0]/total, 100*after[1]/total, 100*after[2]/total, total)
	}
	return nil
}

// readKeys reads a keys file of bulkhead-bench seed.
func readKeys(name string) ([]string, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	keys := strings.Fields(string(b))
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s holds no keys", name)
	}
	return keys, nil
}

// zipfTargeter sends each request with a key drawn by Zipf's law over
// keys: rank k with probability in proportion to k^-s, the ranks assigned
// to the keys in a fixed random order (the seed writes keys organization
// by organization; the hot ones must not all be one tenant's). The order
// is the same in every call; seed picks the sequence of draws.
func zipfTargeter(url string, keys []string, s float64, seed uint64) vegeta.Targeter {
	perm := rand.New(rand.NewPCG(17, 17)).Perm(len(keys))
	z := rand.NewZipf(rand.New(rand.NewPCG(seed, 17)), s, 1, uint64(len(keys)-1))
	var mu sync.Mutex
	return func(t *vegeta.Target) error {
		mu.Lock()
		k := keys[perm[z.Uint64()]]
		mu.Unlock()
		*t = vegeta.Target{Method: "POST", URL: url, Body: []byte(chatBody), Header: headers(k)}
		return nil
	}
}

// authSources reads the gateway's counters of API keys found in process
// (L1), in Redis (L2) and looked up in PostgreSQL (L3); zeros without a
// URL.
func authSources(url string) ([3]float64, error) {
	var out [3]float64
	if url == "" {
		return out, nil
	}
	resp, err := http.Get(url)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	names := []string{"bulkhead_auth_l1_hits_total", "bulkhead_auth_l2_hits_total", "bulkhead_auth_l3_lookups_total"}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		i := slices.Index(names, name)
		if !ok || i < 0 {
			continue
		}
		if out[i], err = strconv.ParseFloat(value, 64); err != nil {
			return out, fmt.Errorf("%s: %w", name, err)
		}
	}
	return out, sc.Err()
}
