package mock

import (
	"encoding/json"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// testServer is a Server behind a real fasthttp.Server on an in-memory
// listener, with a client dialing it.
type testServer struct {
	t      *testing.T
	mock   *Server
	client *fasthttp.Client
}

// newTestServer starts a Server for opts; it is shut down when t ends.
func newTestServer(t *testing.T, opts Options) *testServer {
	t.Helper()
	ln := fasthttputil.NewInmemoryListener()
	mock := NewServer(opts)
	srv := &fasthttp.Server{Handler: mock.Handler, CloseOnShutdown: true}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		mock.Close()
		if err := srv.Shutdown(); err != nil {
			t.Errorf("shutting down: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("serving: %v", err)
		}
	})
	client := &fasthttp.Client{
		Dial:        func(string) (net.Conn, error) { return ln.Dial() },
		ReadTimeout: 10 * time.Second,
	}
	return &testServer{t: t, mock: mock, client: client}
}

// result is a received response, copied out of fasthttp's pooled objects.
type result struct {
	status  int
	header  map[string]string // lower-cased names
	body    string
	elapsed time.Duration
}

// do sends one request; headers are name, value pairs.
func (ts *testServer) do(method, path, body string, headers ...string) result {
	ts.t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(method)
	req.SetRequestURI("http://mockllm" + path)
	if body != "" {
		req.Header.SetContentType("application/json")
		req.SetBodyString(body)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	start := time.Now()
	if err := ts.client.Do(req, resp); err != nil {
		ts.t.Fatalf("%s %s: %v", method, path, err)
	}
	r := result{status: resp.StatusCode(), header: map[string]string{}, body: string(resp.Body()), elapsed: time.Since(start)}
	for k, v := range resp.Header.All() {
		r.header[strings.ToLower(string(k))] = string(v)
	}
	return r
}

// post sends a POST and fails the test unless the status is want.
func (ts *testServer) post(path, body string, want int, headers ...string) result {
	ts.t.Helper()
	r := ts.do("POST", path, body, headers...)
	if r.status != want {
		ts.t.Fatalf("POST %s: status %d, want %d; body %s", path, r.status, want, r.body)
	}
	return r
}

// sseEvent is one parsed server-sent event.
type sseEvent struct {
	name string // "event:" line, if any
	data string
}

// parseSSE splits an event-stream body into events, failing on anything
// that is not "event:"/"data:" lines separated by blank lines.
func parseSSE(t *testing.T, body string) []sseEvent {
	t.Helper()
	if !strings.HasSuffix(body, "\n\n") {
		t.Fatalf("stream does not end with a blank line: %q", body[max(0, len(body)-80):])
	}
	var evs []sseEvent
	for _, block := range strings.Split(strings.TrimSuffix(body, "\n\n"), "\n\n") {
		var ev sseEvent
		for _, line := range strings.Split(block, "\n") {
			switch {
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data = strings.TrimPrefix(line, "data: ")
			default:
				t.Fatalf("unexpected SSE line %q", line)
			}
		}
		evs = append(evs, ev)
	}
	return evs
}

// decode unmarshals s into a new T, failing the test on error.
func decode[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("decoding %q: %v", s, err)
	}
	return v
}

// keys returns the sorted keys of a JSON object, to pin wire shapes.
func keys(m map[string]json.RawMessage) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return strings.Join(ks, ",")
}
