package gateway

import (
	"net"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
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
