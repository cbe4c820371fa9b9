package gateway

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway/openai"
	"github.com/bulkheadhq/bulkhead/store"
)

// otherKey is a second upstream's credential; its base64 holds '+' and '/'.
const otherKey = "azure-key-?>~?>~-7f3a9c"

// leakedStart is how much of a key's start a stream may deliver before the
// gateway withholds it (openai maxHold).
const leakedStart = 16

// internalAddrs are what hostile error bodies tell about the network.
var internalAddrs = []string{
	"10.1.2.3:5432", "172.20.0.5", "192.168.1.10", "127.0.0.1:6379", "169.254.169.254", "[::1]:8080", "fd12:3456::1",
	"postgres://app:hunter2@db:5432/main", "redis://:pw@cache:6379/0", "mysql://root@mysql-0/x",
	"db-7.internal", "llm-backend.example.com:8443", "LLM-BACKEND.example.com",
}

// escapeAll writes every byte of s as a \u00XX escape.
func escapeAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, `\u%04x`, s[i])
	}
	return b.String()
}

func chatChunk(content string) string {
	return `data: {"id":"h","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"` + content + `"}}]}` + "\n\n"
}

// hostileUpstream answers as the model asks, echoing the credential it was
// sent (and another upstream's) in every form the gateway must catch.
func hostileUpstream(n network) string {
	return n.listen(func(rc *fasthttp.RequestCtx) {
		var req struct{ Model string }
		if err := json.Unmarshal(rc.PostBody(), &req); err != nil {
			rc.SetStatusCode(400)
			return
		}
		key := strings.TrimPrefix(string(rc.Request.Header.Peek("Authorization")), "Bearer ")
		answer := func(status int, body string) {
			rc.SetStatusCode(status)
			rc.SetContentType("application/json")
			rc.SetBodyString(body)
		}
		chat := func(content, extra string) {
			answer(200, `{"id":"h","object":"chat.completion",`+extra+`"choices":[{"index":0,"message":{"role":"assistant","content":"`+content+
				`"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":9,"total_tokens":12}}`)
		}
		stream := func(deltas []string) {
			rc.SetStatusCode(200)
			rc.SetContentType("text/event-stream")
			rc.SetBodyStreamWriter(func(w *bufio.Writer) {
				for _, d := range append([]string{"Here ", "it is: "}, deltas...) {
					w.WriteString(chatChunk(d)) //nolint:errcheck // the gateway reads or goes away
					w.Flush()                   //nolint:errcheck // one upstream read per event, as far as TCP allows
				}
				w.WriteString(chatChunk(" enjoy") + "data: [DONE]\n\n") //nolint:errcheck // as above
			})
		}
		perChar := func(s string, esc func(string) string) []string {
			var out []string
			for i := 0; i < len(s); i++ {
				out = append(out, esc(s[i:i+1]))
			}
			return out
		}
		b64 := base64.StdEncoding.EncodeToString
		sum := sha256.Sum256([]byte(key))
		switch req.Model {
		case "echo-plain":
			chat("Your key is "+key+".", `"system_fingerprint":"`+key+`",`)
		case "echo-escaped":
			chat("Your key is "+strings.ReplaceAll(key, "-", `\u002d`)+".", `"system_fingerprint":"`+escapeAll(key)+`",`)
		case "echo-header", "stream-header":
			rc.Response.Header.Set("Openai-Model", key)
			rc.Response.Header.Set("Openai-Version", escapeAll(otherKey))
			if req.Model == "stream-header" {
				stream([]string{"nothing ", "secret"})
				rc.SetContentType("text/event-stream; charset=" + key)
				return
			}
			chat("nothing secret", "")
			rc.SetContentType("application/json; charset=" + key)
		case "echo-other":
			chat("The other one is "+strings.ReplaceAll(otherKey, "/", `\/`)+".", "")
		case "stream-chars":
			stream(perChar(key, func(s string) string { return s }))
		case "stream-escaped-chars":
			stream(perChar(key, escapeAll))
		case "stream-whole":
			stream([]string{"the key ", key})
		case "b64-400":
			answer(400, `{"error":{"type":"invalid_request_error","message":"bad auth `+
				b64([]byte(key))+` `+base64.URLEncoding.EncodeToString([]byte("Bearer "+key))+` `+
				b64([]byte("x"+key))+` `+b64([]byte("xy"+otherKey))+` `+strings.ReplaceAll(b64([]byte("Bearer "+otherKey)), "/", `\/`)+` `+
				base64.RawURLEncoding.EncodeToString([]byte("user:"+otherKey))+` `+hex.EncodeToString(sum[:])+` `+escapeAll(key)+`"}}`)
		case "internal-400":
			answer(400, `{"error":{"type":"invalid_request_error","message":"cannot reach `+strings.Join(internalAddrs, ", ")+`"}}`)
		case "internal-500":
			answer(500, `{"error":{"message":"`+key+` failed at `+strings.Join(internalAddrs, ", ")+`"}}`)
		default:
			answer(404, `{"error":{"message":"no such model"}}`)
		}
	})
}

// hostileHarness is a service-free gateway whose "hostile" upstream is
// hostileUpstream (see withHostile).
func hostileHarness(t *testing.T) *harness {
	n := newMemNet(t)
	return newFakeHarness(t, n, withHostile(hostileUpstream(n)))
}

// withHostile configures the "hostile" upstream at addr, holding
// providerKey, beside an upstream that is never dialled but whose
// credential and host the gateway must keep too.
func withHostile(addr string) func(*config.Config) {
	return func(cfg *config.Config) {
		cfg.Upstreams = []config.Upstream{
			{Name: "hostile", Kind: "openai", URL: "http://" + addr + "/v1", APIKey: providerKey, Models: []string{"echo-*", "stream-*", "b64-*", "internal-*"}},
			{Name: "backend", Kind: "azure", URL: "https://llm-backend.example.com:8443", APIKey: otherKey, APIVersion: "2024-10-21", Models: []string{"never"}},
		}
	}
}

// leaks lists the ways body gives away a key: as is, in a JSON string (any
// escaping), in the text a client assembles from a stream, or base64
// encoded at any alignment and in either alphabet.
func leaks(body []byte) []string {
	var out []string
	var strs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			strs = append(strs, v)
		case []any:
			for _, e := range v {
				walk(e)
			}
		case map[string]any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	var text strings.Builder
	docs := []string{string(body)}
	if !json.Valid(body) {
		docs = nil
		for _, line := range strings.Split(string(body), "\n") {
			if d, ok := strings.CutPrefix(line, "data: "); ok {
				docs = append(docs, d)
			}
		}
	}
	for _, d := range docs {
		var v any
		if json.Unmarshal([]byte(d), &v) != nil {
			continue
		}
		walk(v)
		var c struct {
			Choices []struct{ Delta struct{ Content string } } `json:"choices"`
		}
		if json.Unmarshal([]byte(d), &c) == nil && len(c.Choices) > 0 {
			text.WriteString(c.Choices[0].Delta.Content)
		}
	}
	strs = append(strs, text.String(), string(body))
	for _, key := range []string{providerKey, otherKey} {
		for _, s := range strs {
			if strings.Contains(s, key) {
				out = append(out, fmt.Sprintf("%q in %.80q", key, s))
			}
		}
		core := key[3 : len(key)-3]
		for _, run := range base64Run.FindAllString(strings.ReplaceAll(string(body), `\/`, "/"), -1) {
			run = strings.TrimRight(run, "=")
			for off := range 4 {
				if off >= len(run) {
					break
				}
				r := run[off:]
				r = r[:len(r)/4*4]
				for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
					if dec, err := enc.DecodeString(r); err == nil && strings.Contains(string(dec), core) {
						out = append(out, fmt.Sprintf("%q base64 in %q", key, run))
					}
				}
			}
		}
		sum := sha256.Sum256([]byte(key))
		if strings.Contains(strings.ToLower(string(body)), hex.EncodeToString(sum[:])) {
			out = append(out, fmt.Sprintf("the SHA-256 of %q", key))
		}
	}
	return out
}

var base64Run = regexp.MustCompile(`[A-Za-z0-9+/_-]{16,}=*`)

// blocked reads the credential counter of srv for where.
func blocked(t *testing.T, srv *Server, where string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(srv.metrics.credentialBlocked)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "where" && l.GetValue() == where {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// An upstream that echoes its credential in a 2xx answer, plain or
// JSON-escaped, or in a stream, whole or one character per event: the
// caller never gets it, the record never holds it, the stream is cut with
// an error event, and each time is a counted, logged security event
// (THREATS 56).
func TestProviderKeyNeverReachesTheCaller(t *testing.T) {
	h := hostileHarness(t)
	_, key, _ := h.tenant(1000)
	for _, tc := range []struct {
		model  string
		stream bool
	}{
		{"echo-plain", false},
		{"echo-escaped", false},
		{"echo-other", false},
		{"echo-header", false},
		{"stream-header", true},
		{"stream-chars", true},
		{"stream-escaped-chars", true},
		{"stream-whole", true},
	} {
		t.Run(tc.model, func(t *testing.T) {
			where := leakResponse
			if tc.stream {
				where = leakStream
			}
			before := blocked(t, h.srv, where)
			r := h.do("POST", "/v1/chat/completions", fmt.Sprintf(`{"model":%q,"stream":%v,"messages":[{"role":"user","content":"echo"}]}`, tc.model, tc.stream),
				bearer(key)...)
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if l := leaks(r.body); len(l) > 0 {
				t.Errorf("the caller got a key: %v\n%s", l, r.body)
			}
			for name, v := range r.headers {
				if l := leaks([]byte(`"` + v + `"`)); len(l) > 0 {
					t.Errorf("the caller got a key in %s: %q", name, v)
				}
			}
			reqID := r.headers["x-request-id"]
			rec := h.rec.find(t, reqID)
			for _, k := range []string{providerKey, otherKey} {
				if strings.Contains(rec.Response, k[:leakedStart]) {
					t.Errorf("the record holds %q: %q", k[:leakedStart], rec.Response)
				}
			}
			if got := blocked(t, h.srv, where); got != before+1 {
				t.Errorf("bulkhead_provider_credential_blocked_total{where=%q} went from %v to %v, want +1", where, before, got)
			}
			switch {
			case strings.HasSuffix(tc.model, "-header"): // only the headers held it
				if rec.Status != 200 || !strings.Contains(rec.Response, "nothing secret") ||
					!strings.Contains(r.headers["openai-model"], "[redacted]") || !strings.Contains(r.headers["content-type"], "[redacted]") {
					t.Errorf("record %+v, headers %v, body %s", rec, r.headers, r.body)
				}
			case !tc.stream:
				if rec.Status != 200 || !strings.Contains(rec.Response, "[redacted]") || !strings.Contains(string(r.body), "[redacted]") {
					t.Errorf("record %+v, body %s", rec, r.body)
				}
			default:
				events := sse(t, r.body)
				last := events[len(events)-1]
				var e struct {
					Error struct{ Code, Message string }
				}
				if !strings.Contains(string(r.body), "event: error\ndata: ") || json.Unmarshal([]byte(last), &e) != nil || e.Error.Code != "upstream_error" {
					t.Errorf("the stream does not end with an error event: %q", last)
				}
				var delivered strings.Builder
				for _, d := range events[:len(events)-1] {
					var c struct {
						Choices []struct{ Delta struct{ Content string } } `json:"choices"`
					}
					if err := json.Unmarshal([]byte(d), &c); err != nil {
						t.Fatalf("event %q: %v", d, err)
					}
					delivered.WriteString(c.Choices[0].Delta.Content)
				}
				if !strings.HasPrefix(delivered.String(), "Here it is: ") || strings.Contains(delivered.String(), providerKey[:leakedStart]) {
					t.Errorf("the caller assembled %q", delivered.String())
				}
				if rec.Status != 502 || rec.Response != delivered.String() {
					t.Errorf("record %+v, want status 502 and the delivered text %q", rec, delivered.String())
				}
			}
			logs := h.logs.String()
			if strings.Contains(logs, providerKey) || strings.Contains(logs, otherKey) {
				t.Error("the log holds a key")
			}
			if !regexp.MustCompile(`"level":"warn".*"msg":"security: [^"]*".*"request_id":"` + regexp.QuoteMeta(reqID) + `","upstream":"hostile","where":"` + where + `"`).MatchString(logs) {
				t.Errorf("no security event for %s in the log:\n%s", reqID, logs)
			}
		})
	}
}

// An upstream that streams to a request that asked for a whole answer
// gets the same check as a stream: the buffered events end before the one
// that would complete the credential.
func TestBufferedStreamIsGuarded(t *testing.T) {
	h := hostileHarness(t)
	_, key, _ := h.tenant(1000)
	before := blocked(t, h.srv, leakResponse)
	r := h.do("POST", "/v1/chat/completions", `{"model":"stream-chars","messages":[{"role":"user","content":"echo"}]}`, bearer(key)...)
	if r.status != 200 || !strings.Contains(string(r.body), "it is: ") {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if l := leaks(r.body); len(l) > 0 {
		t.Errorf("the caller got a key: %v\n%s", l, r.body)
	}
	events := sse(t, r.body)
	if !strings.Contains(string(r.body), "event: error\ndata: ") || !strings.Contains(events[len(events)-1], `"upstream_error"`) {
		t.Errorf("the answer does not end with an error event: %s", r.body)
	}
	if got := blocked(t, h.srv, leakResponse); got != before+1 {
		t.Errorf("bulkhead_provider_credential_blocked_total{where=response} went from %v to %v, want +1", before, got)
	}
}

// Upstream error bodies lose the credentials in every spelling (base64 at
// any alignment, "\/"-escaped, hashed, \u-escaped) and internal addresses
// before they are passed on; 5xx bodies are never passed on (THREATS 36).
func TestUpstreamErrorBodiesAreScrubbed(t *testing.T) {
	h := hostileHarness(t)
	_, key, _ := h.tenant(1000)
	for _, tc := range []struct {
		model    string
		status   int
		credited bool // the body held a configured credential
	}{
		{"b64-400", 400, true},
		{"internal-400", 400, false},
		{"internal-500", 502, false},
	} {
		t.Run(tc.model, func(t *testing.T) {
			before := blocked(t, h.srv, leakError)
			r := h.do("POST", "/v1/chat/completions", `{"model":"`+tc.model+`","messages":[]}`, bearer(key)...)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if _, _, code, _ := openAIError(t, r.body); code == "" && tc.status == 502 {
				t.Errorf("not an OpenAI error: %s", r.body)
			}
			if l := leaks(r.body); len(l) > 0 {
				t.Errorf("the caller got a key: %v\n%s", l, r.body)
			}
			for _, a := range append(internalAddrs, "hunter2", "cache:6379", "llm-backend.example.com") {
				if strings.Contains(strings.ToLower(string(r.body)), strings.ToLower(a)) {
					t.Errorf("the caller got %q: %s", a, r.body)
				}
			}
			if tc.model == "internal-400" && !strings.Contains(string(r.body), "cannot reach [internal]") {
				t.Errorf("the message lost more than the addresses: %s", r.body)
			}
			want := before
			if tc.credited {
				want++
			}
			if got := blocked(t, h.srv, leakError); got != want {
				t.Errorf("bulkhead_provider_credential_blocked_total{where=error} went from %v to %v, want %v", before, got, want)
			}
		})
	}
}

// What is stored of an answer that echoed the credential, read back through
// /api/v1/prompts from PostgreSQL, holds none of it.
func TestStoredResponseHoldsNoCredential(t *testing.T) {
	h := newHarness(t, withHostile(hostileUpstream(loopback{t})))
	_, key, _ := h.tenant(1000)
	writer, err := store.NewWriter(h.st, store.WriterOptions{FlushInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stopWriter := context.WithCancel(context.Background())
	writerDone := make(chan error, 1)
	go func() { writerDone <- writer.Run(wctx) }()
	srv, err := New(h.cfg, zap.NewNop(), h.deps(Deps{Recorder: writer, Prompts: h.st}))
	if err != nil {
		t.Fatal(err)
	}
	gw := h.serve(srv)
	t.Cleanup(func() {
		stopWriter()
		if err := <-writerDone; err != nil {
			t.Errorf("writer: %v", err)
		}
	})

	ids := map[string]bool{}
	for _, body := range []string{
		`{"model":"echo-plain","messages":[{"role":"user","content":"echo"}]}`,
		`{"model":"echo-escaped","messages":[{"role":"user","content":"echo"}]}`,
		`{"model":"stream-chars","stream":true,"messages":[{"role":"user","content":"echo"}]}`,
	} {
		r := gw.do("POST", "/v1/chat/completions", body, bearer(key)...)
		if r.status != 200 {
			t.Fatalf("%s: %d %s", body, r.status, r.body)
		}
		ids[r.headers["x-request-id"]] = true
	}
	var rows []store.Prompt
	for deadline := time.Now().Add(10 * time.Second); ; {
		r := gw.do("GET", "/api/v1/prompts?limit=10", "", bearer(key)...)
		var page promptPage
		if r.status != 200 || json.Unmarshal(r.body, &page) != nil {
			t.Fatalf("%d %s", r.status, r.body)
		}
		if rows = page.Data; len(rows) == len(ids) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d rows stored", len(rows), len(ids))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, p := range rows {
		if !ids[p.RequestID] || p.Response == nil {
			t.Fatalf("row %+v", p)
		}
		if strings.Contains(*p.Response, providerKey[:leakedStart]) || *p.Response == "" {
			t.Errorf("stored response of %s (%s): %q", p.RequestID, p.Model, *p.Response)
		}
	}
}

// BenchmarkScrubResponse is the hot-path cost of the credential check on
// a clean 2xx answer: body, recorded text and forwarded headers.
func BenchmarkScrubResponse(b *testing.B) {
	r := newRedactor([]*upstream{{apiKey: providerKey, host: "api.example.com"}, {apiKey: otherKey, host: "llm-backend.example.com:8443"}})
	body := []byte(okChat)
	var h fasthttp.ResponseHeader
	h.SetContentType("application/json")
	h.Set("Openai-Processing-Ms", "12")
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		res := openai.Result{Text: "ok"}
		if out, found := r.response(body, &res); found || len(out) != len(body) || r.headers(&h) {
			b.Fatal("found a credential in a clean answer")
		}
	}
}
