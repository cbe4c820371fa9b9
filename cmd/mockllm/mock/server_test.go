package mock

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
)

// checkErrorBody asserts the OpenAI error shape and returns the error.
func checkErrorBody(t *testing.T, body, wantType string) (msg, typ, code string) {
	t.Helper()
	var e struct {
		Error map[string]json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	if got, want := keys(e.Error), "code,message,param,type"; got != want {
		t.Fatalf("error keys %s, want %s", got, want)
	}
	for _, f := range []struct {
		key string
		dst *string
	}{{"message", &msg}, {"type", &typ}, {"code", &code}} {
		if err := json.Unmarshal(e.Error[f.key], f.dst); err != nil || *f.dst == "" {
			t.Errorf("error.%s = %s, want a non-empty string", f.key, e.Error[f.key])
		}
	}
	if typ != wantType {
		t.Errorf("error.type %q, want %q", typ, wantType)
	}
	return msg, typ, code
}

func TestInjectedStatus(t *testing.T) {
	tests := []struct {
		status     int
		typ, code  string
		retryAfter string
	}{
		{400, "invalid_request_error", "bad_request", ""},
		{401, "invalid_request_error", "invalid_api_key", ""},
		{418, "invalid_request_error", "invalid_request_error", ""},
		{429, "requests", "rate_limit_exceeded", "1"},
		{500, "server_error", "internal_error", ""},
		{503, "server_error", "service_unavailable", ""},
		{599, "server_error", "server_error", ""},
	}
	ts := newTestServer(t, Options{})
	for _, path := range []string{"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"} {
		for _, tt := range tests {
			t.Run(path+"/"+strconv.Itoa(tt.status), func(t *testing.T) {
				// The body is malformed: the injected status wins over parsing.
				r := ts.post(path, `{"stream":true`, tt.status, "x-mock-status", strconv.Itoa(tt.status), "x-request-id", "r-42")
				_, _, code := checkErrorBody(t, r.body, tt.typ)
				if code != tt.code {
					t.Errorf("code %q, want %q", code, tt.code)
				}
				if got := r.header["retry-after"]; got != tt.retryAfter {
					t.Errorf("Retry-After %q, want %q", got, tt.retryAfter)
				}
				if got := r.header["x-mock-request-id"]; got != "r-42" {
					t.Errorf("x-mock-request-id %q on an error", got)
				}
			})
		}
	}
}

func TestRequestErrors(t *testing.T) {
	tests := []struct {
		name    string
		method  string
		path    string
		body    string
		headers []string
		status  int
		code    string
	}{
		{"malformed JSON", "POST", "/v1/chat/completions", `{"model":`, nil, 400, "invalid_json"},
		{"empty body", "POST", "/v1/chat/completions", ``, nil, 400, "invalid_json"},
		{"wrong field type", "POST", "/v1/chat/completions", `{"messages":"hi"}`, nil, 400, "invalid_json"},
		{"malformed JSON on responses", "POST", "/v1/responses", `not json`, nil, 400, "invalid_json"},
		{"unknown path", "POST", "/v1/nope", `{}`, nil, 404, "not_found"},
		{"unknown root", "GET", "/", ``, nil, 404, "not_found"},
		{"GET on a POST endpoint", "GET", "/v1/chat/completions", ``, nil, 405, "method_not_allowed"},
		{"POST on models", "POST", "/v1/models", `{}`, nil, 405, "method_not_allowed"},
		{"bad x-mock-status", "POST", "/v1/chat/completions", `{}`, []string{"x-mock-status", "200"}, 400, "invalid_mock_header"},
		{"bad x-mock-latency", "POST", "/v1/chat/completions", `{}`, []string{"x-mock-latency", "soon"}, 400, "invalid_mock_header"},
		{"bad x-mock-chunks", "POST", "/v1/chat/completions", `{}`, []string{"x-mock-chunks", "0"}, 400, "invalid_mock_header"},
	}
	ts := newTestServer(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ts.do(tt.method, tt.path, tt.body, tt.headers...)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d; body %s", r.status, tt.status, r.body)
			}
			if _, _, code := checkErrorBody(t, r.body, "invalid_request_error"); code != tt.code {
				t.Errorf("code %q, want %q", code, tt.code)
			}
			if tt.status == 405 && r.header["allow"] == "" {
				t.Error("405 without Allow")
			}
		})
	}
}

func TestFailRate(t *testing.T) {
	tests := []struct {
		name string
		rate float64
		path string
		want int
	}{
		{"always fails inference", 1, "/v1/chat/completions", 500},
		{"never fails at zero", 0, "/v1/chat/completions", 200},
		{"models never fail", 1, "/v1/models", 200},
		{"echo never fails", 1, "/v1/_echo/headers", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, Options{FailRate: tt.rate})
			method := "POST"
			if tt.path == "/v1/models" {
				method = "GET"
			}
			for range 20 {
				r := ts.do(method, tt.path, `{}`)
				if r.status != tt.want {
					t.Fatalf("status %d, want %d", r.status, tt.want)
				}
				if tt.want == 500 {
					checkErrorBody(t, r.body, "server_error")
				}
			}
		})
	}
}

func TestLatency(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		headers []string
		path    string
		min     time.Duration
	}{
		{"flag", Options{Latency: 60 * time.Millisecond}, nil, "/v1/chat/completions", 60 * time.Millisecond},
		{"header overrides flag", Options{Latency: time.Hour}, []string{"x-mock-latency", "30ms"}, "/v1/chat/completions", 30 * time.Millisecond},
		{"header on echo", Options{}, []string{"x-mock-latency", "40ms"}, "/v1/_echo/headers", 40 * time.Millisecond},
		{"before injected errors", Options{}, []string{"x-mock-latency", "40ms", "x-mock-status", "502"}, "/v1/responses", 40 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, tt.opts)
			r := ts.do("POST", tt.path, `{}`, tt.headers...)
			if r.elapsed < tt.min {
				t.Errorf("answered after %v, want at least %v", r.elapsed, tt.min)
			}
		})
	}
}

func TestChunkDelay(t *testing.T) {
	ts := newTestServer(t, Options{ChunkDelay: 10 * time.Millisecond, Chunks: 5})
	r := ts.post("/v1/chat/completions", `{"stream":true}`, 200)
	if r.elapsed < 50*time.Millisecond {
		t.Errorf("5 chunks × 10ms took %v", r.elapsed)
	}
	if n := len(parseSSE(t, r.body)); n != 1+5+1+1 {
		t.Errorf("%d events, want 8", n)
	}
}

func TestCloseEndsStreams(t *testing.T) {
	ts := newTestServer(t, Options{ChunkDelay: time.Hour})
	done := make(chan result, 1)
	go func() { done <- ts.do("POST", "/v1/chat/completions", `{"stream":true}`) }()
	time.Sleep(50 * time.Millisecond) // let the stream start waiting
	ts.mock.Close()
	select {
	case r := <-done:
		if evs := parseSSE(t, r.body); len(evs) != 1 {
			t.Errorf("%d events before close, want only the role chunk", len(evs))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stream still running after Close")
	}
}

func TestModels(t *testing.T) {
	ts := newTestServer(t, Options{})
	r := ts.do("GET", "/v1/models", "")
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID     string `json:"id"`
			Object string `json:"object"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(r.body), &list); err != nil || r.status != 200 {
		t.Fatalf("status %d body %s: %v", r.status, r.body, err)
	}
	var ids []string
	for _, m := range list.Data {
		if m.Object != "model" {
			t.Errorf("model %q has object %q", m.ID, m.Object)
		}
		ids = append(ids, m.ID)
	}
	if got, want := list.Object+":"+strings.Join(ids, ","), "list:gpt-4o-mini,gpt-4o,text-embedding-3-small,mock-1"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		ok   bool
	}{
		{"zero", Options{}, true},
		{"full", Options{Latency: time.Second, ChunkDelay: time.Millisecond, Chunks: maxChunks, FailRate: 1}, true},
		{"negative latency", Options{Latency: -1}, false},
		{"too many chunks", Options{Chunks: maxChunks + 1}, false},
		{"negative chunks", Options{Chunks: -1}, false},
		{"fail rate above 1", Options{FailRate: 1.5}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.opts.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}
