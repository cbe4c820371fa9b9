package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/valyala/fasthttp"
	"golang.org/x/sync/errgroup"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway/apikey"
	"github.com/bulkheadhq/bulkhead/store"
)

// memory measures the gateway's resident memory around a burst: idle
// after a short warm-up, during a burst of short chat completions (closed
// loop), and every few seconds after it, beside the Go runtime's own
// account of its heap (from the admin listener's /metrics). It answers
// "is the memory of a burst given back, and when": the runtime returns
// idle heap to the OS only gradually (the background scavenger) or at the
// forced GC two minutes after the last one.
//
// The gateway runs with the request log on (PostgreSQL, the spool) and
// Redis limits, as make bench's; -env adds settings to its environment.
func memory(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("memory", flag.ContinueOnError)
	bin := fs.String("bin", "bin", "folder with the bulkhead and mockllm binaries")
	requests := fs.Int("requests", 20000, "requests of the burst")
	conns := fs.Int("conns", 50, "connections of the burst (closed loop)")
	after := fs.Duration("after", 150*time.Second, "how long to watch after the burst")
	every := fs.Duration("every", 5*time.Second, "sampling interval after the burst")
	nkeys := fs.Int("keys", 1, "distinct API keys the burst cycles through (created for this run, in new organizations deleted at the end)")
	norgs := fs.Int("orgs", 1, "organizations the keys belong to, with -keys above 1")
	promptBytes := fs.Int("prompt-bytes", 0, "pad each request's user message to about this many bytes (0: the short chat request of make bench)")
	trickle := fs.Int("trickle", 0, "requests per second sent after the burst (open loop), as traffic that goes on; 0: none")
	profile := fs.String("heap-profile", "", "save the gateway's heap profiles to PREFIX-burst.pb.gz as the burst ends and PREFIX-end.pb.gz at the end (each as of the last GC; none is forced)")
	var extra envFlags
	fs.Var(&extra, "env", "NAME=VALUE added to the gateway's environment (repeatable), e.g. BULKHEAD_MEMORY_LIMIT=256MiB")
	if err := fs.Parse(args); err != nil {
		return err
	}

	cfg, err := config.Load("", os.LookupEnv)
	if err != nil {
		return err
	}
	keys, cleanup, err := memoryKeys(ctx, cfg, *nkeys, *norgs)
	if err != nil {
		return fmt.Errorf("creating the bench keys (is `make services` done?): %w", err)
	}
	defer cleanup() // after the gateway has stopped (deferred below)
	mock, err := start(ctx, nil, filepath.Join(*bin, "mockllm"), "-listen", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer mock.stop()
	// Free ports, not make bench's fixed ones: other runs may share the
	// machine.
	listen, admin := freeAddr(), freeAddr()
	spoolDir := filepath.Join(os.TempDir(), fmt.Sprintf("bulkhead-bench-memory-spool-%d", os.Getpid()))
	defer os.RemoveAll(spoolDir)
	env := append([]string{
		"BULKHEAD_LISTEN=" + listen, "BULKHEAD_ADMIN_LISTEN=" + admin, "BULKHEAD_CONTROL_LISTEN=",
		"BULKHEAD_UPSTREAM_URL=http://" + mock.addr + "/v1", "BULKHEAD_LOG_LEVEL=info",
		"BULKHEAD_SPOOL_DIR=" + spoolDir,
	}, extra...)
	gw, err := startGateway(ctx, *bin, listen, env)
	if err != nil {
		return err
	}
	defer gw.stop()
	pid := gw.cmd.Process.Pid
	url := "http://" + listen + "/v1/chat/completions"
	metricsURL := "http://" + admin + "/metrics"

	body := chatBody
	if *promptBytes > len(body) {
		body = strings.Replace(body, "Say hello in five words.", strings.Repeat("Say hello in five words. ", *promptBytes/25), 1)
	}
	if _, err := burst(url, keys[:1], body, 200, 4); err != nil { // warm up pools and the key caches
		return err
	}
	time.Sleep(2 * time.Second)

	fmt.Printf("# bulkhead-bench memory  %s  burst of %d requests (%d-byte bodies) at %d connections, %d keys of %d organizations; gateway env: %s\n\n",
		time.Now().UTC().Format(time.RFC3339), *requests, len(body), *conns, len(keys), *norgs, strings.Join(extra, " "))
	fmt.Printf("RSS is the kernel's (VmRSS); the heap columns are the Go runtime's (/metrics): in use (live and " +
		"fragmented spans), idle and not yet returned to the OS (resident, reusable), and returned. GCs counts " +
		"collections since the gateway started, releases those of them that returned the heap after a busy spell " +
		"(BULKHEAD_MEMORY_RETURN_AFTER; - where the build has none).\n\n")
	fmt.Printf("| phase | t | RSS MiB | heap in use MiB | heap idle, not returned MiB | heap returned MiB | next GC MiB | GCs | releases |\n" +
		"|---|---|---|---|---|---|---|---|---|\n")
	var last map[string]float64
	row := func(phase string, t time.Duration) {
		m := scrape(metricsURL)
		last = m
		releases := "-"
		if v, ok := m["bulkhead_memory_releases_total"]; ok {
			releases = strconv.FormatFloat(v, 'f', 0, 64)
		}
		fmt.Printf("| %s | %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.0f | %s |\n", phase, t.Round(100*time.Millisecond),
			rss(pid), mib(m["go_memstats_heap_inuse_bytes"]), mib(m["go_memstats_heap_idle_bytes"]-m["go_memstats_heap_released_bytes"]),
			mib(m["go_memstats_heap_released_bytes"]), mib(m["go_memstats_next_gc_bytes"]), m["go_gc_duration_seconds_count"], releases)
	}
	row("idle after warm-up", 0)

	// The burst, with its RSS sampled every 100 ms for the peak and a
	// row every second.
	t0 := time.Now()
	var peak atomic.Int64 // KiB
	stop := make(chan struct{})
	var sampled sync.WaitGroup
	sampled.Add(1)
	go func() {
		defer sampled.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		n := 0
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if kb := int64(rss(pid) * 1024); kb > peak.Load() {
				peak.Store(kb)
			}
			if n++; n%10 == 0 {
				row("burst", time.Since(t0))
			}
		}
	}()
	failed, err := burst(url, keys, body, *requests, *conns)
	close(stop)
	sampled.Wait()
	if err != nil {
		return err
	}
	took := time.Since(t0)
	fmt.Printf("| burst: peak RSS (100 ms samples) | %s | %.1f | | | | | | |\n", took.Round(100*time.Millisecond), float64(peak.Load())/1024)
	row("burst over", took)
	saveProfile := func(name string) error {
		if *profile == "" {
			return nil
		}
		code, body, err := fasthttp.GetTimeout(nil, "http://"+admin+"/debug/pprof/heap", 10*time.Second)
		if err != nil || code != 200 {
			return fmt.Errorf("heap profile: %d %v", code, err)
		}
		return os.WriteFile(*profile+"-"+name+".pb.gz", body, 0o644)
	}
	if err := saveProfile("burst"); err != nil {
		return err
	}

	end, cpu0, before := time.Now(), cpuTime(pid), last
	sent, tfailed := make(chan int64, 1), make(chan int64, 1)
	quit := make(chan struct{})
	go func() { n, f := trickleLoad(url, keys[0], body, *trickle, quit); sent <- n; tfailed <- f }()
	for t := *every; t <= *after; t += *every {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Until(end.Add(t))):
		}
		row("after", t)
	}
	close(quit)
	afterCPU, tn, tf := cpuTime(pid)-cpu0, <-sent, <-tfailed
	if err := saveProfile("end"); err != nil {
		return err
	}
	fmt.Printf("\nBurst: %d requests in %s (%.0f RPS), %d failed.\n", *requests, took.Round(time.Millisecond), float64(*requests)/took.Seconds(), failed)
	fmt.Printf("After it, %s: %d requests (%d failed); the gateway used %.2f s of CPU, ran %.0f collections, "+
		"%.0f of them releases taking %.1f ms in all.\n", after.String(), tn, tf, afterCPU.Seconds(),
		last["go_gc_duration_seconds_count"]-before["go_gc_duration_seconds_count"],
		last["bulkhead_memory_releases_total"]-before["bulkhead_memory_releases_total"],
		1000*(last["bulkhead_memory_release_seconds_total"]-before["bulkhead_memory_release_seconds_total"]))
	return nil
}

// trickleLoad sends rate requests a second, open loop, until quit is
// closed, and returns how many it sent and how many failed; rate 0 sends
// none.
func trickleLoad(url, key, body string, rate int, quit chan struct{}) (sent, failed int64) {
	if rate <= 0 {
		<-quit
		return 0, 0
	}
	c := &fasthttp.Client{ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	var bad atomic.Int64
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for {
		select {
		case <-quit:
			wg.Wait()
			return sent, bad.Load()
		case <-tick.C:
		}
		sent++
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI(url)
			req.Header.SetMethod("POST")
			req.Header.SetContentType("application/json")
			req.Header.Set("Authorization", "Bearer "+key)
			req.SetBodyString(body)
			if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
				bad.Add(1)
			}
		}()
	}
}

// burst sends n chat completions over conns connections, closed loop,
// request i with keys[i % len(keys)], and returns how many failed
// (transport errors and statuses other than 200).
func burst(url string, keys []string, body string, n, conns int) (failed int64, err error) {
	c := &fasthttp.Client{MaxConnsPerHost: conns, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	var next, bad atomic.Int64
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				key := keys[int(i)%len(keys)]
				req.Reset()
				req.SetRequestURI(url)
				req.Header.SetMethod("POST")
				req.Header.SetContentType("application/json")
				req.Header.Set("Authorization", "Bearer "+key)
				req.SetBodyString(body)
				if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if b := bad.Load(); b == int64(n) {
		return b, fmt.Errorf("all %d requests failed", n)
	}
	return bad.Load(), nil
}

// memoryKeys returns n fresh keys spread over orgs new organizations
// named bench-memory-*, each allowed far more than the bench sends, and a
// cleanup that deletes those organizations (keys and log rows with them;
// also those a run cut short left behind). One key is benchKey's, and
// needs no cleanup.
func memoryKeys(ctx context.Context, cfg config.Config, n, orgs int) ([]string, func(), error) {
	if n <= 1 {
		key, err := benchKey(ctx, cfg, 100_000_000)
		return []string{key}, func() {}, err
	}
	a, err := store.OpenAdmin(ctx, cfg.AdminDatabaseURL.Reveal(), "bench")
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() {
		defer a.Close()
		all, err := a.Orgs(context.WithoutCancel(ctx))
		if err != nil {
			fmt.Fprintln(os.Stderr, "bulkhead-bench: listing the bench organizations to delete:", err)
			return
		}
		for _, o := range all {
			if strings.HasPrefix(o.Name, memoryOrgPrefix) {
				if _, err := a.DeleteOrg(context.WithoutCancel(ctx), o.ID); err != nil {
					fmt.Fprintln(os.Stderr, "bulkhead-bench:", err)
				}
			}
		}
	}
	ids := make([]uuid.UUID, orgs)
	keys := make([]string, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range ids {
		g.Go(func() error {
			org, err := a.CreateOrg(gctx, fmt.Sprintf("%s%d-%d", memoryOrgPrefix, os.Getpid(), i))
			ids[i] = org.ID
			return err
		})
	}
	if err := g.Wait(); err != nil {
		cleanup()
		return nil, nil, err
	}
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range keys {
		g.Go(func() error {
			org := ids[i%orgs]
			key, err := apikey.Generate(org)
			if err != nil {
				return err
			}
			keys[i] = key
			_, err = a.CreateKey(gctx, store.NewKey{OrgID: org, Hash: apikey.Hash([]byte(key)), DisplayPrefix: apikey.Display(key),
				Name: "bench-memory", RateLimitPerMinute: 100_000_000})
			return err
		})
	}
	if err := g.Wait(); err != nil {
		cleanup()
		return nil, nil, err
	}
	return keys, cleanup, nil
}

// memoryOrgPrefix starts the names of memory's organizations.
const memoryOrgPrefix = "bench-memory-"

// scrape reads the unlabelled samples of a Prometheus text page; a
// missing page gives an empty map (its columns then read 0).
func scrape(url string) map[string]float64 {
	m := map[string]float64{}
	code, body, err := fasthttp.GetTimeout(nil, url, 5*time.Second)
	if err != nil || code != 200 {
		return m
	}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, " ")
		if !ok || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			m[name] = v
		}
	}
	return m
}

func mib(b float64) float64 { return b / (1 << 20) }

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer ln.Close()
	return ln.Addr().String()
}

// envFlags collects repeated -env NAME=VALUE flags.
type envFlags []string

func (e *envFlags) String() string { return strings.Join(*e, " ") }

func (e *envFlags) Set(s string) error {
	if name, _, ok := strings.Cut(s, "="); !ok || name == "" {
		return fmt.Errorf("want NAME=VALUE, got %q", s)
	}
	*e = append(*e, s)
	return nil
}
