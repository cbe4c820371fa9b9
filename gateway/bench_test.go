package gateway

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/valyala/fasthttp"

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

func run(b *testing.B, url, key, body string) {
	addr := strings.TrimPrefix(url, "http://")
	c := &fasthttp.HostClient{Addr: addr, Dial: func(a string) (net.Conn, error) { return net.Dial("tcp", a) }}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	req.SetRequestURI(url + "/v1/chat/completions")
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
