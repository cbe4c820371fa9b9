package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/bulkheadhq/bulkhead/cmd/mockllm/mock"
	"github.com/bulkheadhq/bulkhead/config"
)

const chatBody = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hi"}]}`

func bearer(key string) []string { return []string{"Authorization", "Bearer " + key} }

func TestChatNonStream(t *testing.T) {
	h := newFakeHarness(t, nil, nil)
	org, key, k := h.tenant(1000)
	r := h.do("POST", "/v1/chat/completions", chatBody, bearer(key)...)
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	var out struct {
		Object  string `json:"object"`
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
		Usage struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
			TotalTokens      int `json:"total_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(r.body, &out); err != nil || out.Object != "chat.completion" || len(out.Choices) != 1 {
		t.Fatalf("body %s (%v)", r.body, err)
	}
	rec := h.rec.find(t, r.headers["x-request-id"])
	if rec.OrgID != org || rec.KeyID != k.ID || rec.Model != "gpt-4o-mini" || rec.Status != 200 || rec.Stream {
		t.Errorf("record %+v", rec)
	}
	if rec.Response != out.Choices[0].Message.Content || rec.UsageSource != "upstream" ||
		rec.PromptTokens != out.Usage.PromptTokens || rec.CompletionTokens != out.Usage.CompletionTokens || rec.TotalTokens != out.Usage.TotalTokens {
		t.Errorf("record %+v does not match the response %+v", rec, out)
	}
	if !strings.Contains(rec.Prompt, "Say hi") {
		t.Errorf("prompt %q", rec.Prompt)
	}
}

// sse reads the events of an SSE body.
func sse(t *testing.T, body []byte) (data []string) {
	t.Helper()
	for _, ev := range strings.Split(strings.TrimSpace(string(body)), "\n\n") {
		for _, line := range strings.Split(ev, "\n") {
			if d, ok := strings.CutPrefix(line, "data: "); ok {
				data = append(data, d)
			}
		}
	}
	return data
}

func TestChatStreamUsage(t *testing.T) {
	h := newFakeHarness(t, nil, nil)
	_, key, _ := h.tenant(1000)

	for _, tc := range []struct {
		name      string
		body      string
		wantUsage bool // the caller sees the usage chunk
	}{
		{"caller did not ask for usage", `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`, false},
		{"caller asked for usage", `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do("POST", "/v1/chat/completions", tc.body, bearer(key)...)
			if r.status != 200 || !strings.HasPrefix(r.headers["content-type"], "text/event-stream") {
				t.Fatalf("status %d %q: %s", r.status, r.headers["content-type"], r.body)
			}
			events := sse(t, r.body)
			if events[len(events)-1] != "[DONE]" {
				t.Errorf("stream does not end with [DONE]: %q", events[len(events)-1])
			}
			var text strings.Builder
			sawUsage := false
			for _, d := range events[:len(events)-1] {
				var c struct {
					Choices []struct {
						Delta struct{ Content string } `json:"delta"`
					} `json:"choices"`
					Usage *struct {
						TotalTokens int `json:"total_tokens"`
					} `json:"usage"`
				}
				if err := json.Unmarshal([]byte(d), &c); err != nil {
					t.Fatalf("event %q: %v", d, err)
				}
				if len(c.Choices) > 0 {
					text.WriteString(c.Choices[0].Delta.Content)
				}
				if c.Usage != nil {
					sawUsage = true
				}
			}
			if sawUsage != tc.wantUsage {
				t.Errorf("caller saw the usage chunk: %v, want %v", sawUsage, tc.wantUsage)
			}
			rec := h.rec.find(t, r.headers["x-request-id"])
			if !rec.Stream || rec.Status != 200 || rec.UsageSource != "upstream" || rec.TotalTokens == 0 {
				t.Errorf("record %+v", rec)
			}
			if rec.Response != text.String() || rec.Response == "" {
				t.Errorf("recorded text %q, streamed %q", rec.Response, text.String())
			}
		})
	}
}

func TestResponsesAndEmbeddings(t *testing.T) {
	h := newFakeHarness(t, nil, nil)
	_, key, _ := h.tenant(1000)

	r := h.do("POST", "/v1/responses", `{"model":"gpt-4o-mini","input":"hello","stream":true}`, bearer(key)...)
	if r.status != 200 || !bytes.Contains(r.body, []byte("response.completed")) {
		t.Fatalf("responses stream: %d %s", r.status, r.body)
	}
	rec := h.rec.find(t, r.headers["x-request-id"])
	if rec.UsageSource != "upstream" || rec.TotalTokens == 0 || rec.Response == "" || rec.Endpoint != "/v1/responses" {
		t.Errorf("responses record %+v", rec)
	}

	r = h.do("POST", "/v1/embeddings", `{"model":"text-embedding-3-small","input":["a","b"]}`, bearer(key)...)
	if r.status != 200 || !bytes.Contains(r.body, []byte(`"embedding"`)) {
		t.Fatalf("embeddings: %d %s", r.status, r.body)
	}
	rec = h.rec.find(t, r.headers["x-request-id"])
	if rec.UsageSource != "upstream" || rec.PromptTokens == 0 || rec.Endpoint != "/v1/embeddings" {
		t.Errorf("embeddings record %+v", rec)
	}

	r = h.do("POST", "/v1/completions", `{"model":"gpt-3.5-turbo-instruct","prompt":"once upon"}`, bearer(key)...)
	if r.status != 200 || !bytes.Contains(r.body, []byte(`"text_completion"`)) {
		t.Fatalf("completions: %d %s", r.status, r.body)
	}
}

// captured is what a capturing upstream saw of the last request.
type captured struct {
	mu      sync.Mutex
	headers map[string]string
	uri     string
	body    []byte
}

// captureUpstream answers every request with answer (status, headers,
// body) and remembers what it was sent.
func captureUpstream(n network, c *captured, status int, body string, headers ...string) string {
	return n.listen(func(rc *fasthttp.RequestCtx) {
		if rc.IsGet() && bytes.HasSuffix(rc.Path(), []byte("/models")) {
			// The gateway's own model-list fetch (for metric labels) runs in
			// the background; it is not the request under test.
			rc.SetContentType("application/json")
			rc.SetBodyString(`{"object":"list","data":[]}`)
			return
		}
		c.mu.Lock()
		c.headers = map[string]string{}
		for k, v := range rc.Request.Header.All() {
			c.headers[strings.ToLower(string(k))] = string(v)
		}
		c.uri = string(rc.RequestURI())
		c.body = append([]byte(nil), rc.PostBody()...)
		c.mu.Unlock()
		for i := 0; i+1 < len(headers); i += 2 {
			rc.Response.Header.Set(headers[i], headers[i+1])
		}
		rc.SetStatusCode(status)
		rc.SetContentType("application/json")
		rc.SetBodyString(body)
	})
}

const okChat = `{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`

// The tenant comes only from the credential; tenant-looking input is
// neither believed nor forwarded, and the caller's credential never leaves.
func TestHeadersAndTenantInput(t *testing.T) {
	n := newMemNet(t)
	var c captured
	addr := captureUpstream(n, &c, 200, okChat,
		"Set-Cookie", "session=upstream", "X-Ratelimit-Remaining-Requests", "9999",
		"Openai-Organization", "provider-org", "Openai-Processing-Ms", "12", "Connection", "close")
	h := newFakeHarness(t, n, func(cfg *config.Config) { cfg.UpstreamURL = "http://" + addr + "/v1" })
	orgA, keyA, _ := h.tenant(1000)
	orgB, _, _ := h.tenant(1000)

	body := `{"model":"gpt-4o-mini","organization_id":"` + orgB.String() + `","messages":[{"role":"user","content":"x"}]}`
	r := h.do("POST", "/v1/chat/completions?org="+orgB.String(), body,
		"Authorization", "Bearer "+keyA,
		"X-Tenant-Id", orgB.String(), "X-Organization-Id", orgB.String(), "OpenAI-Organization", orgB.String(),
		"OpenAI-Project", "proj_b", "Cookie", "a=b", "Connection", "X-Foo", "X-Foo", "bar", "Keep-Alive", "timeout=5",
		"TE", "trailers", "Upgrade", "h2c", "Proxy-Authorization", "Basic eA==", "X-Forwarded-For", "10.0.0.1",
		"X-Forwarded-Host", "169.254.169.254", "X-Stainless-Lang", "go", "OpenAI-Beta", "assistants=v2",
		"X-Request-Id", "caller-req-1")
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	rec := h.rec.find(t, "caller-req-1")
	if rec.OrgID != orgA {
		t.Errorf("request recorded for %s, want the key's organization %s", rec.OrgID, orgA)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if got := c.headers["authorization"]; got != "Bearer "+providerKey {
		t.Errorf("upstream Authorization = %q, want the provider key", got)
	}
	for _, name := range []string{"x-tenant-id", "x-organization-id", "openai-organization", "openai-project", "cookie",
		"x-foo", "keep-alive", "te", "upgrade", "proxy-authorization", "x-forwarded-for", "x-forwarded-host", "api-key", "x-api-key"} {
		if v, ok := c.headers[name]; ok {
			t.Errorf("upstream received %s: %q", name, v)
		}
	}
	for name, want := range map[string]string{"x-stainless-lang": "go", "openai-beta": "assistants=v2", "x-request-id": "caller-req-1"} {
		if c.headers[name] != want {
			t.Errorf("upstream %s = %q, want %q", name, c.headers[name], want)
		}
	}
	if strings.Contains(c.uri, orgB.String()) || c.uri != "/v1/chat/completions" {
		t.Errorf("upstream URI %q", c.uri)
	}
	for _, name := range []string{"set-cookie", "openai-organization"} {
		if v, ok := r.headers[name]; ok {
			t.Errorf("caller received upstream header %s: %q", name, v)
		}
	}
	if v := r.headers["x-ratelimit-remaining-requests"]; v == "9999" {
		t.Error("caller received the provider account's x-ratelimit-remaining-requests")
	}
	if r.headers["openai-processing-ms"] != "12" {
		t.Errorf("openai-processing-ms not passed on: %v", r.headers)
	}
}

func TestAuthErrorsAreUniform(t *testing.T) {
	h := newHarness(t, nil)
	orgA, keyA, _ := h.tenant(1000)
	orgB, keyB, _ := h.tenant(1000)
	revoked, kr := h.key(orgA, 10)
	if _, err := h.admin.RevokeKey(t.Context(), kr.ID); err != nil {
		t.Fatal(err)
	}
	swapped := "sk_" + orgB.String() + keyA[39:]

	bodies := map[string]string{}
	for name, headers := range map[string][]string{
		"unknown key":      bearer("sk_" + orgA.String() + "_" + strings.Repeat("A", 49)),
		"swapped org":      bearer(swapped),
		"revoked":          bearer(revoked),
		"garbage":          bearer("hello"),
		"openai-style key": bearer("sk-proj-abcdef"),
		"basic auth":       {"Authorization", "Basic dXNlcjpwYXNz"},
	} {
		r := h.do("POST", "/v1/chat/completions", chatBody, headers...)
		if r.status != 401 {
			t.Errorf("%s: status %d", name, r.status)
		}
		_, _, code, reqID := openAIError(t, r.body)
		if code != "invalid_api_key" {
			t.Errorf("%s: code %q", name, code)
		}
		bodies[name] = strings.ReplaceAll(string(r.body), reqID, "ID")
		if strings.Contains(string(r.body), "sk_") || strings.Contains(string(r.body), orgB.String()) {
			t.Errorf("%s: body echoes the credential: %s", name, r.body)
		}
	}
	for name, b := range bodies {
		if b != bodies["unknown key"] {
			t.Errorf("%s body differs from an unknown key's:\n%s\n%s", name, b, bodies["unknown key"])
		}
	}

	// All three credential headers work; two different ones are refused.
	for _, hdr := range []string{"Authorization", "Api-Key", "X-Api-Key"} {
		v := keyA
		if hdr == "Authorization" {
			v = "Bearer " + keyA
		}
		if r := h.do("POST", "/v1/chat/completions", chatBody, hdr, v); r.status != 200 {
			t.Errorf("credential in %s: status %d %s", hdr, r.status, r.body)
		}
	}
	r := h.do("POST", "/v1/chat/completions", chatBody, "Authorization", "Bearer "+keyA, "Api-Key", keyB)
	if r.status != 401 {
		t.Errorf("two different credentials: status %d", r.status)
	}
	if r := h.do("POST", "/v1/chat/completions", chatBody, "Authorization", "Bearer "+keyA, "X-Api-Key", keyA); r.status != 200 {
		t.Errorf("the same credential twice: status %d", r.status)
	}
}

func TestUpstreamFailures(t *testing.T) {
	n := newMemNet(t)
	var c captured
	echoKey := captureUpstream(n, &c, 400, `{"error":{"message":"Incorrect API key provided: `+providerKey+` and sk-other-1234567890","type":"invalid_request_error"}}`)
	unauthorized := captureUpstream(n, &c, 401, `{"error":{"message":"Incorrect API key provided: `+providerKey+`"}}`)
	redirect := captureUpstream(n, &c, 302, `{}`, "Location", "http://169.254.169.254/latest/meta-data")
	dead, deadAddr := n.listener()
	dead.Close()

	h := newFakeHarness(t, n, func(cfg *config.Config) {
		cfg.UpstreamFirstByteTimeout = 300 * time.Millisecond
		// Each case is what one failure answers, retries spent; the open
		// circuit that several would cause is attempts_test.go's.
		cfg.UpstreamBreakerFailures = 0
		cfg.Upstreams = []config.Upstream{
			{Name: "echo-key", Kind: "openai", URL: "http://" + echoKey + "/v1", APIKey: providerKey, Models: []string{"echo-key"}},
			{Name: "unauthorized", Kind: "openai", URL: "http://" + unauthorized + "/v1", APIKey: providerKey, Models: []string{"unauthorized"}},
			{Name: "redirect", Kind: "openai", URL: "http://" + redirect + "/v1", Models: []string{"redirect"}},
			{Name: "dead", Kind: "openai", URL: "http://" + deadAddr + "/v1", Models: []string{"dead-*"}},
		}
	})
	_, key, _ := h.tenant(1000)
	chat := func(model string, headers ...string) reply {
		return h.do("POST", "/v1/chat/completions", `{"model":"`+model+`","messages":[{"role":"user","content":"x"}]}`,
			append(bearer(key), headers...)...)
	}
	for _, tc := range []struct {
		name    string
		r       reply
		status  int
		headers map[string]string
	}{
		{"upstream 500", chat("gpt-4o-mini", "X-Stainless-Mock-Status", "500"), 502, nil},
		{"upstream 503", chat("gpt-4o-mini", "X-Stainless-Mock-Status", "503"), 502, nil},
		{"upstream 429 passes with Retry-After", chat("gpt-4o-mini", "X-Stainless-Mock-Status", "429"), 429, map[string]string{"retry-after": "1"}},
		{"upstream 400 passes", chat("gpt-4o-mini", "X-Stainless-Mock-Status", "400"), 400, nil},
		{"upstream too slow", chat("gpt-4o-mini", "X-Stainless-Mock-Latency", "1s"), 504, nil},
		{"upstream refuses the provider key", chat("unauthorized"), 502, nil},
		{"upstream redirects", chat("redirect"), 502, nil},
		{"upstream down", chat("dead-1"), 502, nil},
		{"upstream 4xx echoing the provider key", chat("echo-key"), 400, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.r.status != tc.status {
				t.Errorf("status %d, want %d: %s", tc.r.status, tc.status, tc.r.body)
			}
			for k, v := range tc.headers {
				if tc.r.headers[k] != v {
					t.Errorf("%s = %q, want %q", k, tc.r.headers[k], v)
				}
			}
			// ".invalid": the in-memory upstreams' hosts.
			for _, secret := range []string{providerKey, "sk-other", "127.0.0.1", "169.254", ".invalid"} {
				if bytes.Contains(tc.r.body, []byte(secret)) {
					t.Errorf("body leaks a secret or an address (%s): %s", secret, tc.r.body)
				}
			}
			var e struct{ Error map[string]any }
			if json.Unmarshal(tc.r.body, &e) != nil || e.Error == nil {
				t.Errorf("not an OpenAI error: %s", tc.r.body)
			}
			rec := h.rec.find(t, tc.r.headers["x-request-id"])
			if rec.Status != tc.status {
				t.Errorf("recorded status %d, want %d", rec.Status, tc.status)
			}
		})
	}
}

func TestModelRouting(t *testing.T) {
	n := newMemNet(t)
	var c captured
	azure := captureUpstream(n, &c, 200, okChat)
	h := newFakeHarness(t, n, func(cfg *config.Config) {
		cfg.Upstreams = []config.Upstream{{Name: "azure-eu", Kind: "azure", URL: "http://" + azure, APIKey: "azure-secret-key",
			APIVersion: "2024-10-21", Models: []string{"gpt-4o", "gpt-4.1*"}, Deployments: map[string]string{"gpt-4o": "prod-4o"}}}
	})
	_, key, _ := h.tenant(1000)
	for model, wantURI := range map[string]string{
		"gpt-4o":       "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21",
		"gpt-4.1-nano": "/openai/deployments/gpt-4.1-nano/chat/completions?api-version=2024-10-21",
	} {
		r := h.do("POST", "/v1/chat/completions", `{"model":"`+model+`","messages":[]}`, bearer(key)...)
		if r.status != 200 {
			t.Fatalf("%s: %d %s", model, r.status, r.body)
		}
		c.mu.Lock()
		if c.uri != wantURI || c.headers["api-key"] != "azure-secret-key" || c.headers["authorization"] != "" {
			t.Errorf("%s: upstream got %s api-key=%q authorization=%q", model, c.uri, c.headers["api-key"], c.headers["authorization"])
		}
		c.mu.Unlock()
	}
	// Everything else goes to the default upstream (the mock).
	if r := h.do("POST", "/v1/chat/completions", chatBody, bearer(key)...); r.status != 200 || !bytes.Contains(r.body, []byte("mock")) {
		t.Errorf("default route: %d %s", r.status, r.body)
	}

	r := h.do("GET", "/v1/models", "", bearer(key)...)
	if r.status != 200 || !bytes.Contains(r.body, []byte(`"gpt-4o"`)) || !bytes.Contains(r.body, []byte(`"mock-1"`)) {
		t.Errorf("/v1/models: %d %s", r.status, r.body)
	}
	if r := h.do("GET", "/v1/models", ""); r.status != 401 {
		t.Errorf("/v1/models without a key: %d", r.status)
	}

	// Without a default upstream, an unrouted model is model_not_found.
	h2 := newFakeHarness(t, n, func(cfg *config.Config) {
		cfg.UpstreamURL = ""
		cfg.Upstreams = []config.Upstream{{Name: "one", Kind: "openai", URL: "http://" + azure + "/v1", Models: []string{"only-this"}}}
	})
	_, key2, _ := h2.tenant(1000)
	r = h2.do("POST", "/v1/chat/completions", chatBody, bearer(key2)...)
	if _, _, code, _ := openAIError(t, r.body); r.status != 404 || code != "model_not_found" {
		t.Errorf("unrouted model: %d %s", r.status, r.body)
	}
}

// A caller that goes away mid-stream stops the upstream, and what arrived
// is recorded.
func TestStreamClientDisconnect(t *testing.T) {
	h := newFakeHarnessWith(t, nil, mock.Options{ChunkDelay: 20 * time.Millisecond, Chunks: 100}, nil) // a 2s stream
	_, key, _ := h.tenant(1000)
	conn, err := h.dial()
	if err != nil {
		t.Fatal(err)
	}
	body := `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	raw := fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/json\r\nX-Request-Id: disconnect-1\r\nContent-Length: %d\r\n\r\n%s", key, len(body), body)
	start := time.Now()
	if _, err := conn.Write([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil || !strings.Contains(line, "200") {
		t.Fatalf("status line %q %v", line, err)
	}
	for !strings.Contains(line, "data:") { // read up to the first event
		if line, err = br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close()
	rec := h.rec.find(t, "disconnect-1")
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Errorf("record after %s: the gateway kept reading the upstream after the caller left", took)
	}
	if rec.Status != statusClientClosed || !rec.Stream {
		t.Errorf("record %+v, want status 499", rec)
	}
}

// An upstream that breaks off mid-stream: the caller gets an error event,
// and the record keeps what arrived.
func TestStreamUpstreamBreaks(t *testing.T) {
	n := newMemNet(t)
	ln, addr := n.listener()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				http.ReadRequest(bufio.NewReader(c)) //nolint:errcheck // any request
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
				ev := `data: {"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"partial "}}]}` + "\n\n"
				fmt.Fprintf(c, "%x\r\n%s\r\n", len(ev), ev)
				fmt.Fprintf(c, "%x\r\n%s\r\n", len(ev), ev)
				// and then nothing: the connection drops without the last chunk
			}()
		}
	}()
	h := newFakeHarness(t, n, func(cfg *config.Config) { cfg.UpstreamURL = "http://" + addr + "/v1" })
	_, key, _ := h.tenant(1000)
	r := h.do("POST", "/v1/chat/completions", `{"model":"m","stream":true,"messages":[]}`, bearer(key)...)
	if r.status != 200 || !bytes.Contains(r.body, []byte("partial")) || !bytes.Contains(r.body, []byte("event: error")) {
		t.Errorf("caller saw %d %s", r.status, r.body)
	}
	rec := h.rec.find(t, r.headers["x-request-id"])
	if rec.Status != 502 || rec.Response != "partial partial " || rec.UsageSource != "estimated" {
		t.Errorf("record %+v", rec)
	}
}
