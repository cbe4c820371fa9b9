package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway/auth"
)

// openAIError decodes and checks the OpenAI error shape.
func openAIError(t *testing.T, body []byte) (msg, typ, code, reqID string) {
	t.Helper()
	var e struct {
		Error struct {
			Message   string  `json:"message"`
			Type      string  `json:"type"`
			Code      *string `json:"code"`
			RequestID string  `json:"request_id"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Message == "" || e.Error.Type == "" {
		t.Fatalf("not an OpenAI error body: %s (%v)", body, err)
	}
	if e.Error.Code != nil {
		code = *e.Error.Code
	}
	return e.Error.Message, e.Error.Type, code, e.Error.RequestID
}

func TestHealthz(t *testing.T) {
	h := newFakeHarness(t, nil, nil)
	r := h.do("GET", "/healthz", "")
	if r.status != 200 || !bytes.Contains(r.body, []byte(`"ok"`)) {
		t.Errorf("GET /healthz = %d %s", r.status, r.body)
	}
	if r.headers["x-request-id"] == "" {
		t.Error("no x-request-id on the response")
	}
	if _, ok := r.headers["server"]; ok {
		t.Errorf("Server banner present: %q", r.headers["server"])
	}
}

func TestErrorsAreOpenAIShaped(t *testing.T) {
	h := newFakeHarness(t, nil, func(c *config.Config) { c.MaxRequestBodyBytes = 4096 })
	_, key, _ := h.tenant(1000)
	auth := []string{"Authorization", "Bearer " + key}

	cases := []struct {
		name, method, path, body string
		headers                  []string
		status                   int
		code                     string
	}{
		{"unknown path", "GET", "/nope", "", nil, 404, "not_found"},
		{"unknown v1 path", "POST", "/v1/fine_tuning/jobs", "{}", auth, 404, "not_found"},
		{"wrong method", "POST", "/healthz", "", nil, 405, "method_not_allowed"},
		{"wrong method on a model endpoint", "GET", "/v1/chat/completions", "", auth, 405, "method_not_allowed"},
		{"body too large", "POST", "/v1/chat/completions", strings.Repeat("x", 8192), auth, 413, "request_too_large"},
		{"no key", "POST", "/v1/chat/completions", "{}", nil, 401, "invalid_api_key"},
		{"malformed JSON", "POST", "/v1/chat/completions", "{nope", auth, 400, "invalid_request"},
		{"no model", "POST", "/v1/chat/completions", `{"messages":[]}`, auth, 400, "invalid_request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do(tc.method, tc.path, tc.body, tc.headers...)
			if r.status != tc.status {
				t.Errorf("status = %d, want %d (%s)", r.status, tc.status, r.body)
			}
			if ct := r.headers["content-type"]; ct != "application/json" {
				t.Errorf("content-type = %q", ct)
			}
			msg, _, code, reqID := openAIError(t, r.body)
			if code != tc.code {
				t.Errorf("code = %q, want %q", code, tc.code)
			}
			if reqID == "" || reqID != r.headers["x-request-id"] || !strings.Contains(msg, reqID) {
				t.Errorf("request id: body %q, header %q, message %q", reqID, r.headers["x-request-id"], msg)
			}
		})
	}
}

func TestRequestIDs(t *testing.T) {
	h := newFakeHarness(t, nil, nil)
	for _, tc := range []struct {
		in   string
		keep bool
	}{
		{"client-id-123", true},
		{"abc:def.ghi_jkl", true},
		{"has space", false},
		{"<script>", false},
		{strings.Repeat("a", 129), false},
	} {
		got := h.do("GET", "/healthz", "", "X-Request-Id", tc.in).headers["x-request-id"]
		if (got == tc.in) != tc.keep || got == "" {
			t.Errorf("x-request-id %q -> %q, keep=%v", tc.in, got, tc.keep)
		}
	}
	first, second := h.do("GET", "/healthz", ""), h.do("GET", "/healthz", "")
	if first.headers["x-request-id"] == second.headers["x-request-id"] {
		t.Error("two requests got the same generated id")
	}
}

// The authenticator's answers other than a bad credential are
// OpenAI-shaped too: 503 when it cannot verify the key now, 429 with
// Retry-After when a failure budget is spent, the same for an address as
// for an organization.
func TestAuthFailuresAreOpenAIShaped(t *testing.T) {
	h := newFakeHarness(t, nil, nil)
	_, key, _ := h.tenant(1000)
	bodies := map[string]string{}
	for _, tc := range []struct {
		name            string
		err             error
		status          int
		typ, code, wait string
	}{
		{"unavailable", auth.ErrUnavailable, 503, "server_error", "auth_unavailable", ""},
		{"address throttled", &auth.ThrottledError{Scope: auth.ScopeAddress, RetryAfter: 1500 * time.Millisecond}, 429, "requests", "auth_rate_limited", "2"},
		{"organization throttled", &auth.ThrottledError{Scope: auth.ScopeOrganization, RetryAfter: 1500 * time.Millisecond}, 429, "requests", "auth_rate_limited", "2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.fake.failWith(tc.err)
			r := h.do("POST", "/v1/chat/completions", chatBody, bearer(key)...)
			msg, typ, code, reqID := openAIError(t, r.body)
			if r.status != tc.status || typ != tc.typ || code != tc.code || r.headers["retry-after"] != tc.wait {
				t.Errorf("%d %s, retry-after %q; want %d %s %s, retry-after %q", r.status, r.body, r.headers["retry-after"], tc.status, tc.typ, tc.code, tc.wait)
			}
			if reqID == "" || reqID != r.headers["x-request-id"] || strings.Contains(msg, tc.err.Error()) {
				t.Errorf("request id %q (header %q), message %q", reqID, r.headers["x-request-id"], msg)
			}
			bodies[tc.name] = strings.ReplaceAll(string(r.body), reqID, "ID")
		})
	}
	if bodies["address throttled"] != bodies["organization throttled"] {
		t.Errorf("the answers tell an address's budget from an organization's:\n%s\n%s", bodies["address throttled"], bodies["organization throttled"])
	}
}

// TestOversizedBodyOnLoopback: a body far over the limit, sent whole
// before the answer is read (as most SDKs send), still gets its 413 in
// the error shape. fasthttp answers before reading the body and closed at
// once; the bytes still arriving made the kernel reset the connection,
// and the client saw "connection reset by peer" instead (see
// gateway/internal/linger).
func TestOversizedBodyOnLoopback(t *testing.T) {
	h := newFakeHarness(t, loopback{t}, func(c *config.Config) { c.MaxRequestBodyBytes = 4096 })
	_, key, _ := h.tenant(1000)
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + strings.Repeat("x", 4<<20) + `"}]}`
	for i := range 10 {
		conn, err := h.dial()
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		req := "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key +
			"\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
		if _, err := conn.Write([]byte(req)); err != nil {
			conn.Close()
			t.Fatalf("round %d: writing the request: %v", i, err)
		}
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			conn.Close()
			t.Fatalf("round %d: reading the answer: %v", i, err)
		}
		got, _ := io.ReadAll(res.Body)
		conn.Close()
		if res.StatusCode != 413 {
			t.Fatalf("round %d: status %d (%s)", i, res.StatusCode, got)
		}
		if _, _, code, reqID := openAIError(t, got); code != "request_too_large" || reqID != res.Header.Get("X-Request-Id") {
			t.Fatalf("round %d: code %q, request id %q against header %q", i, code, reqID, res.Header.Get("X-Request-Id"))
		}
	}
}
