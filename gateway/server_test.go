package gateway

import (
	"bytes"
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/config"
)

// testServer runs a Server on an in-memory listener and returns a client
// bound to it.
func testServer(t *testing.T, cfg config.Config) *fasthttp.Client {
	t.Helper()
	ln := fasthttputil.NewInmemoryListener()
	srv := New(cfg, zap.NewNop())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ln.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &fasthttp.Client{Dial: func(string) (net.Conn, error) { return ln.Dial() }}
}

func do(t *testing.T, c *fasthttp.Client, method, path string, body []byte, headers ...string) (int, http1Headers, []byte) {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://gateway" + path)
	req.Header.SetMethod(method)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	req.SetBody(body)
	if err := c.Do(req, resp); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	h := http1Headers{}
	for k, v := range resp.Header.All() {
		h[strings.ToLower(string(k))] = string(v)
	}
	return resp.StatusCode(), h, append([]byte(nil), resp.Body()...)
}

type http1Headers map[string]string

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
	c := testServer(t, config.Default())
	status, h, body := do(t, c, "GET", "/healthz", nil)
	if status != 200 || !bytes.Contains(body, []byte(`"ok"`)) {
		t.Errorf("GET /healthz = %d %s", status, body)
	}
	if h["x-request-id"] == "" {
		t.Error("no x-request-id on the response")
	}
	if _, ok := h["server"]; ok {
		t.Errorf("Server banner present: %q", h["server"])
	}
}

func TestErrorsAreOpenAIShaped(t *testing.T) {
	cfg := config.Default()
	cfg.MaxRequestBodyBytes = 4096
	c := testServer(t, cfg)

	cases := []struct {
		name, method, path string
		body               []byte
		headers            []string
		status             int
		code               string
	}{
		{"unknown path", "GET", "/nope", nil, nil, 404, "not_found"},
		{"wrong method", "POST", "/healthz", nil, nil, 405, "method_not_allowed"},
		{"body too large", "POST", "/v1/chat/completions", bytes.Repeat([]byte("x"), 8192), nil, 413, "request_too_large"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, h, body := do(t, c, tc.method, tc.path, tc.body, tc.headers...)
			if status != tc.status {
				t.Errorf("status = %d, want %d (%s)", status, tc.status, body)
			}
			if ct := h["content-type"]; ct != "application/json" {
				t.Errorf("content-type = %q", ct)
			}
			msg, _, code, reqID := openAIError(t, body)
			if code != tc.code {
				t.Errorf("code = %q, want %q", code, tc.code)
			}
			if reqID == "" || reqID != h["x-request-id"] || !strings.Contains(msg, reqID) {
				t.Errorf("request id: body %q, header %q, message %q", reqID, h["x-request-id"], msg)
			}
		})
	}
}

func TestRequestIDs(t *testing.T) {
	c := testServer(t, config.Default())
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
		_, h, _ := do(t, c, "GET", "/healthz", nil, "X-Request-Id", tc.in)
		got := h["x-request-id"]
		if (got == tc.in) != tc.keep || got == "" {
			t.Errorf("x-request-id %q -> %q, keep=%v", tc.in, got, tc.keep)
		}
	}
	_, h1, _ := do(t, c, "GET", "/healthz", nil)
	_, h2, _ := do(t, c, "GET", "/healthz", nil)
	if h1["x-request-id"] == h2["x-request-id"] {
		t.Error("two requests got the same generated id")
	}
}
