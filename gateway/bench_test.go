package gateway

import (
	"context"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/google/uuid"
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
// leases, a Redis round trip now and then), through one with the catalog
// and access but no budgets ("catalog") and through one with none of them
// ("off"), alternating twice in one run, and logs the ratios of ns/op
// (above 1: the features' cost; on/catalog is the budgets' own).
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
	enf, err := budget.New(budget.Options{Source: on.st, Redis: on.rdb, Prefix: "bulkhead:budget:bench:" + uuid.NewString()})
	if err != nil {
		b.Fatal(err)
	}
	ectx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { enf.Run(ectx); close(done) }()
	b.Cleanup(func() { stop(); <-done })
	on.start(Deps{Auth: on.auth, Recorder: on.rec, Prompts: on.st, Limiter: on.limiter, Catalog: on.runCatalog(), Budgets: enf})

	// c1: one connection, each request waiting for the last (latency);
	// c50: 50 connections at once (throughput, as make bench measures).
	for _, mode := range []string{"c1", "c50"} {
		nsPerOp := map[string][]float64{}
		final := map[string]float64{} // the last call of each sub-benchmark (b.Run calls it with N=1 first)
		for round := range 2 {
			for _, c := range []struct {
				name, url, key, body string
			}{
				{"off", off.url, offKey, chatBody},
				{"catalog", cat.url, catKey, strings.Replace(chatBody, "gpt-4o-mini", catModel, 1)},
				{"on", on.url, onKey, strings.Replace(chatBody, "gpt-4o-mini", model, 1)},
			} {
				b.Run(mode+"/"+c.name+"/"+strconv.Itoa(round), func(b *testing.B) {
					if mode == "c1" {
						run(b, c.url, c.key, c.body)
					} else {
						runParallel(b, 50, c.url, c.key, c.body)
					}
					final[c.name+"/"+strconv.Itoa(round)] = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
				})
				nsPerOp[c.name] = append(nsPerOp[c.name], final[c.name+"/"+strconv.Itoa(round)])
			}
		}
		if on, off, cat := sum(nsPerOp["on"]), sum(nsPerOp["off"]), sum(nsPerOp["catalog"]); on > 0 && off > 0 && cat > 0 {
			b.Logf("%s: catalog+access+budgets on/off ns/op ratio %.3f (throughput %.1f%% of off; on %v, off %v)",
				mode, on/off, 100*off/on, nsPerOp["on"], nsPerOp["off"])
			b.Logf("%s: budgets on/catalog+access ns/op ratio %.3f (throughput %.1f%% of catalog+access; catalog %v)",
				mode, on/cat, 100*cat/on, nsPerOp["catalog"])
		}
	}
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
