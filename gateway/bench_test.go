package gateway

import (
	"context"
	"net"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/cmd/mockllm/mock"
	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway/budget"
	"github.com/bulkheadhq/bulkhead/store"
)

// BenchmarkProxyChat measures one proxied non-streaming chat completion
// through the whole gateway (auth from cache, parse, route, forward, parse
// usage, record) against the in-process mock, over loopback. allocs/op
// counts the client, the gateway and the mock together; compare with
// BenchmarkDirectChat, the same request straight to the mock.
func BenchmarkProxyChat(b *testing.B) {
	benchChat(b, true)
}

func BenchmarkDirectChat(b *testing.B) { benchChat(b, false) }

// BenchmarkProxyChatCatalog is BenchmarkProxyChat with the model catalog
// on, the request naming a shared catalog model: the catalog's decision
// comes from the in-process view, so it should cost no round trip
// (compare with BenchmarkProxyChat in the same run).
func BenchmarkProxyChatCatalog(b *testing.B) {
	h := newBenchHarness(b)
	h.withCatalog()
	_, key, _ := h.tenant(1_000_000_000)
	model := "bench-" + uuid.NewString()[:8]
	if _, err := h.admin.AddModel(context.Background(), store.Model{Name: model, Upstream: "default", InputPrice: 150_000, OutputPrice: 600_000, Enabled: true}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { h.admin.RemoveModel(context.Background(), store.ModelRef{Name: model}) }) //nolint:errcheck // best effort
	run(b, h.url, key, strings.Replace(chatBody, "gpt-4o-mini", model, 1))
}

func BenchmarkProxyChatStream(b *testing.B) {
	h := newBenchHarness(b)
	_, key, _ := h.tenant(1_000_000_000)
	run(b, h.url, key, `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say hi"}]}`)
}

func benchChat(b *testing.B, viaGateway bool) {
	h := newBenchHarness(b)
	_, key, _ := h.tenant(1_000_000_000)
	url := h.url
	if !viaGateway {
		url = "http://" + strings.TrimSuffix(strings.TrimPrefix(h.cfg.UpstreamURL, "http://"), "/v1")
		key = ""
	}
	run(b, url, key, chatBody)
}

func run(b *testing.B, url, key, body string) { runPath(b, url, "/v1/chat/completions", key, body) }

func runPath(b *testing.B, url, path, key, body string) {
	addr := strings.TrimPrefix(url, "http://")
	c := &fasthttp.HostClient{Addr: addr, Dial: func(a string) (net.Conn, error) { return net.Dial("tcp", a) }}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	req.SetRequestURI(url + path)
	req.Header.SetMethod("POST")
	req.Header.SetContentType("application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.SetBodyString(body)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
			b.Fatalf("%v %d %s", err, resp.StatusCode(), resp.Body())
		}
	}
}

// BenchmarkProxyChatAnthropic is BenchmarkProxyChat for an Anthropic
// model: the chat body translated to a Messages body, the answer back
// (chatmessages.go). Compare with BenchmarkProxyMessages, the same
// conversation sent natively to /v1/messages and passed through, in the
// same run.
func BenchmarkProxyChatAnthropic(b *testing.B) {
	h := anthropicBenchHarness(b)
	_, key, _ := h.tenant(1_000_000_000)
	runPath(b, h.url, "/v1/chat/completions", key, `{"model":"claude-x","max_tokens":256,"messages":[{"role":"user","content":"Say hi"}]}`)
}

// BenchmarkProxyMessages is the native passthrough of the same request.
func BenchmarkProxyMessages(b *testing.B) {
	h := anthropicBenchHarness(b)
	_, key, _ := h.tenant(1_000_000_000)
	runPath(b, h.url, "/v1/messages", key, `{"model":"claude-x","max_tokens":256,"messages":[{"role":"user","content":"Say hi"}]}`)
}

// BenchmarkProxyChatAnthropicStream and BenchmarkProxyMessagesStream are
// the streamed pair.
func BenchmarkProxyChatAnthropicStream(b *testing.B) {
	h := anthropicBenchHarness(b)
	_, key, _ := h.tenant(1_000_000_000)
	runPath(b, h.url, "/v1/chat/completions", key, `{"model":"claude-x","max_tokens":256,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Say hi"}]}`)
}

func BenchmarkProxyMessagesStream(b *testing.B) {
	h := anthropicBenchHarness(b)
	_, key, _ := h.tenant(1_000_000_000)
	runPath(b, h.url, "/v1/messages", key, `{"model":"claude-x","max_tokens":256,"stream":true,"messages":[{"role":"user","content":"Say hi"}]}`)
}

// anthropicBenchHarness routes claude-* to the mock's Messages API.
func anthropicBenchHarness(b *testing.B) *harness {
	h := newHarnessWith(b, mock.Options{}, func(c *config.Config) {
		c.Upstreams = []config.Upstream{{Name: "anthropic", Kind: "anthropic", URL: strings.TrimSuffix(c.UpstreamURL, "/v1"), APIKey: anthropicKey, Models: []string{"claude-*"}}}
	})
	h.rec.discard = true
	return h
}

// BenchmarkProxyChatTracing is BenchmarkProxyChat with tracing off and on,
// in the same run on one harness (two gateways): "on" has the SDK's
// tracer provider with its batch processor, every request sampled, the
// spans handed to an exporter that drops them (the OTLP export itself runs
// off the request path, in the batcher's goroutine). Compare ns/op and
// allocs/op between the two.
func BenchmarkProxyChatTracing(b *testing.B) {
	h := newBenchHarness(b)
	_, key, _ := h.tenant(1_000_000_000)
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	b.Cleanup(func() { tp.Shutdown(context.Background()) }) //nolint:errcheck // nothing to flush
	srv, err := New(h.cfg, zap.NewNop(), h.deps(Deps{Auth: h.auth, Recorder: h.rec, Prompts: h.st, Limiter: h.limiter, Tracer: tp}))
	if err != nil {
		b.Fatal(err)
	}
	traced := h.serve(srv)
	b.Run("off", func(b *testing.B) { run(b, h.url, key, chatBody) })
	b.Run("on", func(b *testing.B) { run(b, traced.url, key, chatBody) })
}

// BenchmarkProxyChatMoney runs the same priced request through a gateway
// with the catalog, access and budgets (an organization budget and a key
// budget, never exhausted: requests reserve and settle on the replica's
// leases, a round trip to the counters now and then) counted in Redis
// ("on") or in PostgreSQL ("on-pg"), through one with the catalog and
// access but no budgets ("catalog") and through one with none of them
// ("off"), alternating three times in one run, and logs the ratios of
// ns/op and of CPU per request (above 1: the features' cost; on/catalog
// is the budgets' own).
func BenchmarkProxyChatMoney(b *testing.B) {
	ctx := context.Background()
	off := newBenchHarness(b)
	_, offKey, _ := off.tenant(1_000_000_000)

	cat := newBenchHarness(b)
	_, catKey, _ := cat.tenant(1_000_000_000)
	catModel := "bench-" + uuid.NewString()[:8]
	if _, err := cat.admin.AddModel(ctx, store.Model{Name: catModel, Upstream: "default", InputPrice: 150_000, OutputPrice: 600_000, Enabled: true}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cat.admin.RemoveModel(context.Background(), store.ModelRef{Name: catModel}) }) //nolint:errcheck // best effort
	cat.start(Deps{Auth: cat.auth, Recorder: cat.rec, Prompts: cat.st, Limiter: cat.limiter, Catalog: cat.runCatalog()})

	on := newBenchHarness(b)
	org, onKey, k := on.tenant(1_000_000_000)
	model := "bench-" + uuid.NewString()[:8]
	if _, err := on.admin.AddModel(ctx, store.Model{Name: model, Upstream: "default", InputPrice: 150_000, OutputPrice: 600_000, Enabled: true}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { on.admin.RemoveModel(context.Background(), store.ModelRef{Name: model}) }) //nolint:errcheck // best effort
	for _, bg := range []store.Budget{
		{OrgID: org, Limit: store.MaxBudget, Window: store.BudgetWindow{Kind: "month"}, AlertAt: []int{900}},
		{OrgID: org, KeyID: &k.ID, Limit: store.MaxBudget, Window: store.BudgetWindow{Kind: "day"}},
	} {
		if _, err := on.admin.SetBudget(ctx, bg); err != nil {
			b.Fatal(err)
		}
	}
	// "on" counts the budgets in Redis; "on-pg" is the same gateway and
	// tenant with PostgreSQL's counters instead (no Redis).
	urls, regs := map[string]string{}, map[string]*prometheus.Registry{}
	for name, o := range map[string]budget.Options{
		"on":    {Source: on.st, Redis: on.rdb, Prefix: "bulkhead:budget:bench:" + uuid.NewString()},
		"on-pg": {Source: on.st, Counters: on.st},
	} {
		regs[name] = prometheus.NewRegistry()
		o.Metrics = regs[name]
		enf, err := budget.New(o)
		if err != nil {
			b.Fatal(err)
		}
		ectx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { enf.Run(ectx); close(done) }()
		b.Cleanup(func() { stop(); <-done })
		srv, err := New(on.cfg, zap.NewNop(), on.deps(Deps{Auth: on.auth, Recorder: on.rec, Prompts: on.st, Limiter: on.limiter, Catalog: on.runCatalog(), Budgets: enf}))
		if err != nil {
			b.Fatal(err)
		}
		urls[name] = on.serve(srv).url
	}

	// c1: one connection, each request waiting for the last (latency);
	// c50: 50 connections at once (throughput, as make bench measures).
	// Each sub-benchmark also reports this process's CPU time per request
	// (cpu-ns/op: getrusage, user + system; the client, the mock upstream
	// and the gateway share the process, so differences between setups are
	// the gateway's), steadier than wall time on a shared machine.
	for _, mode := range []string{"c1", "c50"} {
		nsPerOp, cpuPerOp := map[string][]float64{}, map[string][]float64{}
		final, finalCPU := map[string]float64{}, map[string]float64{} // the last call of each sub-benchmark (b.Run calls it with N=1 first)
		for round := range 3 {
			for _, c := range []struct {
				name, url, key, body string
			}{
				{"off", off.url, offKey, chatBody},
				{"catalog", cat.url, catKey, strings.Replace(chatBody, "gpt-4o-mini", catModel, 1)},
				{"on", urls["on"], onKey, strings.Replace(chatBody, "gpt-4o-mini", model, 1)},
				{"on-pg", urls["on-pg"], onKey, strings.Replace(chatBody, "gpt-4o-mini", model, 1)},
			} {
				id := c.name + "/" + strconv.Itoa(round)
				b.Run(mode+"/"+id, func(b *testing.B) {
					cpu0 := processCPU(b)
					if mode == "c1" {
						run(b, c.url, c.key, c.body)
					} else {
						runParallel(b, 50, c.url, c.key, c.body)
					}
					final[id] = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
					finalCPU[id] = float64(processCPU(b)-cpu0) / float64(b.N)
					b.ReportMetric(finalCPU[id], "cpu-ns/op")
				})
				nsPerOp[c.name] = append(nsPerOp[c.name], final[id])
				cpuPerOp[c.name] = append(cpuPerOp[c.name], finalCPU[id])
			}
		}
		for _, on := range []string{"on", "on-pg"} {
			if v, off, cat := sum(nsPerOp[on]), sum(nsPerOp["off"]), sum(nsPerOp["catalog"]); v > 0 && off > 0 && cat > 0 {
				b.Logf("%s %s: catalog+access+budgets/off ns/op ratio %.3f (throughput %.1f%% of off); budgets/catalog+access ns/op ratio %.3f (throughput %.1f%% of catalog+access); %s %v, catalog %v, off %v",
					mode, on, v/off, 100*off/v, v/cat, 100*cat/v, on, nsPerOp[on], nsPerOp["catalog"], nsPerOp["off"])
				b.Logf("%s %s: CPU per request: budgets/catalog+access %.3f, +%.1f µs (%s %v ns, catalog %v ns, off %v ns)",
					mode, on, sum(cpuPerOp[on])/sum(cpuPerOp["catalog"]), (sum(cpuPerOp[on])-sum(cpuPerOp["catalog"]))/3/1000,
					on, cpuPerOp[on], cpuPerOp["catalog"], cpuPerOp["off"])
			}
		}
	}
	for name, reg := range regs {
		b.Logf("%s: admissions by source %s", name, admissionsText(b, reg))
	}
}

// processCPU is this process's user and system CPU time so far, in ns.
func processCPU(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// admissionsText lists bulkhead_budget_admissions_total by source.
func admissionsText(b *testing.B, reg *prometheus.Registry) string {
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		if mf.GetName() == "bulkhead_budget_admissions_total" {
			for _, m := range mf.GetMetric() {
				out = append(out, m.GetLabel()[0].GetValue()+"="+strconv.FormatFloat(m.GetCounter().GetValue(), 'f', 0, 64))
			}
		}
	}
	return strings.Join(out, " ")
}

func sum(v []float64) (s float64) {
	for _, x := range v {
		s += x
	}
	return s
}

// runParallel is run over conns connections at once.
func runParallel(b *testing.B, conns int, url, key, body string) {
	addr := strings.TrimPrefix(url, "http://")
	c := &fasthttp.HostClient{Addr: addr, MaxConns: conns, Dial: func(a string) (net.Conn, error) { return net.Dial("tcp", a) }}
	b.ReportAllocs()
	b.SetParallelism((conns + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI(url + "/v1/chat/completions")
		req.Header.SetMethod("POST")
		req.Header.SetContentType("application/json")
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		req.SetBodyString(body)
		for pb.Next() {
			if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
				b.Errorf("%v %d %s", err, resp.StatusCode(), resp.Body())
				return
			}
		}
	})
}
