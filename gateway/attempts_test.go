package gateway

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"

	"github.com/bulkheadhq/bulkhead/config"
)

const (
	badKey  = "sk-bad-upstream-KEY-1111111111111111"
	goodKey = "sk-good-upstream-KEY-2222222222222222"
)

// flaky is an upstream that answers every request with status (0: the
// mock's own answer, through next), counting its calls; it sees which
// credential it got.
type flaky struct {
	status  atomic.Int32
	calls   atomic.Int32
	badAuth atomic.Int32 // calls that carried another upstream's key
	key     string
	next    fasthttp.RequestHandler
}

func (f *flaky) handle(rc *fasthttp.RequestCtx) {
	f.calls.Add(1)
	if got := string(rc.Request.Header.Peek("Authorization")); got != "Bearer "+f.key {
		f.badAuth.Add(1)
	}
	if st := int(f.status.Load()); st != 0 {
		rc.SetStatusCode(st)
		rc.SetContentType("application/json")
		rc.SetBodyString(`{"error":{"message":"down for now","type":"server_error"}}`)
		return
	}
	f.next(rc)
}

// fallbackHarness: model gpt-4o-mini routes to "bad" (answering badStatus)
// with "good" (the mock) as its fallback.
func fallbackHarness(t *testing.T, badStatus int, mod func(*config.Config)) (*harness, *flaky, *flaky) {
	t.Helper()
	n := newMemNet(t)
	bad, good := &flaky{key: badKey}, &flaky{key: goodKey}
	bad.status.Store(int32(badStatus))
	var h *harness
	bad.next = func(rc *fasthttp.RequestCtx) { h.mock.Handler(rc) }
	good.next = func(rc *fasthttp.RequestCtx) { h.mock.Handler(rc) }
	badAddr, goodAddr := n.listen(bad.handle), n.listen(good.handle)
	h = newFakeHarness(t, n, func(c *config.Config) {
		c.UpstreamURL = ""
		c.UpstreamRetryBackoff = time.Millisecond
		c.Upstreams = []config.Upstream{
			{Name: "bad", Kind: "openai", URL: "http://" + badAddr + "/v1", APIKey: badKey, Models: []string{"gpt-4o-mini"}, Fallbacks: []string{"good"}},
			{Name: "good", Kind: "openai", URL: "http://" + goodAddr + "/v1", APIKey: goodKey, Models: []string{"good-only"}},
		}
		if mod != nil {
			mod(c)
		}
	})
	return h, bad, good
}

// Before the first byte reaches the caller, a 5xx, a 429 or a refused
// connection moves the request to the next upstream; the record names the
// upstream that answered and the attempts; the failing upstream's key
// never reaches the healthy one.
func TestFallbackBeforeFirstByte(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
	}{{"503", 503}, {"500", 500}, {"429", 429}} {
		t.Run(tc.name, func(t *testing.T) {
			h, bad, good := fallbackHarness(t, tc.status, nil)
			_, key, _ := h.tenant(1000)
			for _, body := range []string{chatBody, `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`} {
				r := h.do("POST", "/v1/chat/completions", body, "Authorization", "Bearer "+key)
				if r.status != 200 || !strings.Contains(string(r.body), "mock") {
					t.Fatalf("%d %s", r.status, r.body)
				}
				rec := h.rec.find(t, r.headers["x-request-id"])
				if rec.Upstream != "good" || rec.Attempts != 2 || rec.Status != 200 || rec.TotalTokens == 0 {
					t.Errorf("record: upstream %q attempts %d status %d tokens %d", rec.Upstream, rec.Attempts, rec.Status, rec.TotalTokens)
				}
			}
			if bad.calls.Load() != 2 || good.calls.Load() != 2 || bad.badAuth.Load()+good.badAuth.Load() != 0 {
				t.Errorf("calls bad %d good %d; foreign keys %d %d", bad.calls.Load(), good.calls.Load(), bad.badAuth.Load(), good.badAuth.Load())
			}
		})
	}
	t.Run("first-byte timeout", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		h, bad, good := fallbackHarness(t, 0, func(c *config.Config) { c.UpstreamFirstByteTimeout = 100 * time.Millisecond })
		bad.next = func(*fasthttp.RequestCtx) { <-release }
		_, key, _ := h.tenant(1000)
		r := h.do("POST", "/v1/chat/completions", chatBody, "Authorization", "Bearer "+key)
		if rec := h.rec.find(t, r.headers["x-request-id"]); r.status != 200 || rec.Upstream != "good" || rec.Attempts != 2 || good.calls.Load() != 1 {
			t.Errorf("%d; record %q %d", r.status, rec.Upstream, rec.Attempts)
		}
		_ = bad
	})
	t.Run("connection refused", func(t *testing.T) {
		n := newMemNet(t)
		var h *harness
		good := &flaky{key: goodKey, next: func(rc *fasthttp.RequestCtx) { h.mock.Handler(rc) }}
		goodAddr := n.listen(good.handle)
		h = newFakeHarness(t, n, func(c *config.Config) {
			c.UpstreamURL = ""
			c.Upstreams = []config.Upstream{
				{Name: "gone", Kind: "openai", URL: "http://nobody.invalid/v1", APIKey: badKey, Models: []string{"gpt-4o-mini"}, Fallbacks: []string{"good"}},
				{Name: "good", Kind: "openai", URL: "http://" + goodAddr + "/v1", APIKey: goodKey, Models: []string{"x"}},
			}
		})
		_, key, _ := h.tenant(1000)
		r := h.do("POST", "/v1/chat/completions", chatBody, "Authorization", "Bearer "+key)
		if rec := h.rec.find(t, r.headers["x-request-id"]); r.status != 200 || rec.Upstream != "good" || rec.Attempts != 2 {
			t.Errorf("%d; record %q %d", r.status, rec.Upstream, rec.Attempts)
		}
	})
}

// A 4xx other than 429 is the caller's mistake: answered, not retried.
func TestNoFallbackOnCallerError(t *testing.T) {
	h, bad, good := fallbackHarness(t, 400, nil)
	_, key, _ := h.tenant(1000)
	r := h.do("POST", "/v1/chat/completions", chatBody, "Authorization", "Bearer "+key)
	if r.status != 400 || bad.calls.Load() != 1 || good.calls.Load() != 0 {
		t.Errorf("%d; calls bad %d good %d", r.status, bad.calls.Load(), good.calls.Load())
	}
}

// Once a stream's first byte is on its way nothing is retried: a stream
// that breaks is the caller's to see, from the one upstream.
func TestNoRetryAfterFirstByte(t *testing.T) {
	h, bad, good := fallbackHarness(t, 0, nil)
	bad.next = func(rc *fasthttp.RequestCtx) {
		rc.SetContentType("text/event-stream")
		rc.SetBodyString("data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"par\"}}]}\n\n")
		rc.SetConnectionClose() // no [DONE]: the stream ends broken
	}
	_, key, _ := h.tenant(1000)
	r := h.do("POST", "/v1/chat/completions", `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`, "Authorization", "Bearer "+key)
	if r.status != 200 || !strings.Contains(string(r.body), "par") {
		t.Fatalf("%d %s", r.status, r.body)
	}
	rec := h.rec.find(t, r.headers["x-request-id"])
	if bad.calls.Load() != 1 || good.calls.Load() != 0 || rec.Attempts != 1 || rec.Upstream != "bad" {
		t.Errorf("calls bad %d good %d; record %q %d", bad.calls.Load(), good.calls.Load(), rec.Upstream, rec.Attempts)
	}
}

// Attempts are bounded, round the chain again after a backoff, and never
// past the request's deadline.
func TestRetriesBounded(t *testing.T) {
	t.Run("max attempts", func(t *testing.T) {
		h, bad, good := fallbackHarness(t, 503, func(c *config.Config) { c.UpstreamMaxAttempts = 5 })
		good.status.Store(502)
		_, key, _ := h.tenant(1000)
		r := h.do("POST", "/v1/chat/completions", chatBody, "Authorization", "Bearer "+key)
		rec := h.rec.find(t, r.headers["x-request-id"])
		if r.status != 502 || bad.calls.Load() != 3 || good.calls.Load() != 2 || rec.Attempts != 5 || rec.Upstream != "bad" {
			t.Errorf("%d; calls bad %d good %d; record %q %d", r.status, bad.calls.Load(), good.calls.Load(), rec.Upstream, rec.Attempts)
		}
		if strings.Contains(string(r.body), "down for now") || strings.Contains(string(r.body), goodKey) {
			t.Errorf("the upstream's error body reached the caller: %s", r.body)
		}
	})
	t.Run("one attempt", func(t *testing.T) {
		h, bad, good := fallbackHarness(t, 503, func(c *config.Config) { c.UpstreamMaxAttempts = 1 })
		_, key, _ := h.tenant(1000)
		if r := h.do("POST", "/v1/chat/completions", chatBody, "Authorization", "Bearer "+key); r.status != 502 || bad.calls.Load() != 1 || good.calls.Load() != 0 {
			t.Errorf("%d; calls bad %d good %d", r.status, bad.calls.Load(), good.calls.Load())
		}
	})
	t.Run("a backoff past the deadline is not waited", func(t *testing.T) {
		h, bad, good := fallbackHarness(t, 503, func(c *config.Config) {
			c.UpstreamRetryBackoff = time.Hour
			c.UpstreamTimeout = time.Minute
		})
		good.status.Store(503)
		_, key, _ := h.tenant(1000)
		r := h.do("POST", "/v1/chat/completions", chatBody, "Authorization", "Bearer "+key)
		if rec := h.rec.find(t, r.headers["x-request-id"]); r.status != 502 || bad.calls.Load() != 1 || good.calls.Load() != 1 || rec.Attempts != 2 {
			t.Errorf("%d; calls bad %d good %d; attempts %d", r.status, bad.calls.Load(), good.calls.Load(), rec.Attempts)
		}
	})
}

// Consecutive failures open an upstream's circuit: its requests go
// straight to the fallback; after the cooldown one probe goes through and
// its success closes the circuit. The state shows in metrics and /readyz.
func TestCircuitBreaker(t *testing.T) {
	h, bad, good := fallbackHarness(t, 503, func(c *config.Config) {
		c.UpstreamBreakerFailures = 2
		c.UpstreamBreakerCooldown = 200 * time.Millisecond
	})
	_, key, _ := h.tenant(1000)
	send := func() reply {
		t.Helper()
		r := h.do("POST", "/v1/chat/completions", chatBody, "Authorization", "Bearer "+key)
		if r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		return r
	}
	send()
	send()
	if st := h.srv.UpstreamStates()["upstream:bad"]; st != "open" {
		t.Fatalf("after 2 failures: %s", st)
	}
	health := NewHealth(prometheus.NewRegistry(), func(map[string]bool) bool { return true })
	health.Report(h.srv.UpstreamStates)
	if ready, states := health.Ready(); !ready || states["upstream:bad"] != "open" || states["upstream:good"] != "closed" {
		t.Errorf("/readyz: ready %v, states %v; want ready, bad open, good closed", ready, states)
	}
	if v := testutil.ToFloat64(h.srv.upstreamSeries.state.WithLabelValues("bad")); v != 2 {
		t.Errorf("bulkhead_upstream_circuit_state{upstream=bad} = %v, want 2", v)
	}
	r := send()
	if rec := h.rec.find(t, r.headers["x-request-id"]); bad.calls.Load() != 2 || rec.Attempts != 1 || rec.Upstream != "good" {
		t.Errorf("open circuit: bad called %d times; record %q %d", bad.calls.Load(), rec.Upstream, rec.Attempts)
	}
	if v := testutil.ToFloat64(h.srv.upstreamSeries.attempts.WithLabelValues("bad", "skipped")); v != 1 {
		t.Errorf("skipped attempts %v, want 1", v)
	}
	// After the cooldown: half-open; a successful probe closes it.
	bad.status.Store(0)
	deadline := time.Now().Add(10 * time.Second)
	for h.srv.UpstreamStates()["upstream:bad"] != "half-open" {
		if time.Now().After(deadline) {
			t.Fatal("the circuit never became half-open")
		}
		time.Sleep(20 * time.Millisecond)
	}
	r = send()
	if rec := h.rec.find(t, r.headers["x-request-id"]); rec.Upstream != "bad" || h.srv.UpstreamStates()["upstream:bad"] != "closed" || good.calls.Load() != 3 {
		t.Errorf("probe: record %q, state %s, good calls %d", rec.Upstream, h.srv.UpstreamStates()["upstream:bad"], good.calls.Load())
	}
}

// With every upstream's circuit open the request is refused at once.
func TestAllCircuitsOpen(t *testing.T) {
	h, bad, good := fallbackHarness(t, 503, func(c *config.Config) {
		c.UpstreamBreakerFailures = 1
		c.UpstreamBreakerCooldown = time.Hour
		c.UpstreamMaxAttempts = 2
	})
	good.status.Store(503)
	_, key, _ := h.tenant(1000)
	h.do("POST", "/v1/chat/completions", chatBody, "Authorization", "Bearer "+key)
	r := h.do("POST", "/v1/chat/completions", chatBody, "Authorization", "Bearer "+key)
	rec := h.rec.find(t, r.headers["x-request-id"])
	if r.status != 503 || !strings.Contains(string(r.body), "upstream_unavailable") || bad.calls.Load() != 1 || good.calls.Load() != 1 || rec.Attempts != 0 {
		t.Errorf("%d %s; calls %d %d; attempts %d", r.status, r.body, bad.calls.Load(), good.calls.Load(), rec.Attempts)
	}
}

// Each attempt's request is built afresh: an Azure upstream's api-key
// header never reaches the OpenAI-compatible fallback (nor its path and
// api-version), and the fallback's answer is scrubbed of its own key.
func TestFallbackSendsOnlyItsOwnCredential(t *testing.T) {
	n := newMemNet(t)
	var azureCalls atomic.Int32
	azureAddr := n.listen(func(rc *fasthttp.RequestCtx) {
		azureCalls.Add(1)
		rc.SetStatusCode(503)
	})
	var leaked atomic.Value
	leaked.Store("")
	goodAddr := n.listen(func(rc *fasthttp.RequestCtx) {
		if v := rc.Request.Header.Peek("Api-Key"); len(v) > 0 {
			leaked.Store("api-key: " + string(v))
		}
		if q := rc.QueryArgs().Peek("api-version"); len(q) > 0 || string(rc.Path()) != "/v1/chat/completions" {
			leaked.Store("path: " + string(rc.RequestURI()))
		}
		rc.SetContentType("application/json")
		rc.SetBodyString(`{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"my key is ` + goodKey + `"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":5,"total_tokens":6}}`)
	})
	h := newFakeHarness(t, n, func(c *config.Config) {
		c.UpstreamURL = ""
		c.Upstreams = []config.Upstream{
			{Name: "azure", Kind: "azure", URL: "http://" + azureAddr, APIKey: badKey, APIVersion: "2024-10-21", Models: []string{"gpt-4o-mini"}, Fallbacks: []string{"good"}},
			{Name: "good", Kind: "openai", URL: "http://" + goodAddr + "/v1", APIKey: goodKey, Models: []string{"x"}},
		}
	})
	_, key, _ := h.tenant(1000)
	r := h.do("POST", "/v1/chat/completions", chatBody, "Authorization", "Bearer "+key)
	if r.status != 200 || azureCalls.Load() != 1 {
		t.Fatalf("%d %s; azure calls %d", r.status, r.body, azureCalls.Load())
	}
	if l := leaked.Load().(string); l != "" {
		t.Errorf("the fallback got the first upstream's %s", l)
	}
	if strings.Contains(string(r.body), goodKey) || strings.Contains(h.logs.String(), goodKey) || strings.Contains(h.logs.String(), badKey) {
		t.Errorf("a provider key reached the caller or the log: %s", r.body)
	}
}
