package gateway

import (
	"bufio"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/store"
)

// slowRecorder is a recorder whose Record takes a while, and which tells
// whether Record has returned for a request id.
type slowRecorder struct {
	delay time.Duration
	mu    sync.Mutex
	done  map[string]bool
}

func (s *slowRecorder) Admit() error { return nil }

func (s *slowRecorder) Record(r store.LogRecord) {
	time.Sleep(s.delay)
	s.mu.Lock()
	s.done[r.RequestID] = true
	s.mu.Unlock()
}

func (s *slowRecorder) recorded(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done[id]
}

// THREATS 58 (issue 13, point 1): the record of a request is made (and
// with the store's writer, journaled) before the caller has the whole
// answer: before a buffered answer's first byte, and before a stream's
// terminal event. A Record that takes 150 ms must have returned by the
// time the caller reads the answer's end.
func TestRecordBeforeAnswerEnds(t *testing.T) {
	h := newFakeHarness(t, nil, nil)
	_, key, _ := h.tenant(1_000_000)
	rec := &slowRecorder{delay: 150 * time.Millisecond, done: map[string]bool{}}
	srv, err := New(h.cfg, zap.NewNop(), h.deps(Deps{Recorder: rec}))
	if err != nil {
		t.Fatal(err)
	}
	gw := h.serve(srv)
	client := gw.httpClient()

	cases := []struct {
		name, path, body, end string
	}{
		{"chat stream", "/v1/chat/completions", `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`, "data: [DONE]"},
		{"completions stream", "/v1/completions", `{"model":"gpt-4o-mini","stream":true,"prompt":"hi"}`, "data: [DONE]"},
		{"responses stream", "/v1/responses", `{"model":"gpt-4o-mini","stream":true,"input":"hi"}`, `"type":"response.completed"`},
		{"chat", "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`, `"choices"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := "order-" + strings.ReplaceAll(c.name, " ", "-")
			req, _ := http.NewRequest("POST", gw.url+c.path, strings.NewReader(c.body))
			req.Header.Set("Authorization", "Bearer "+key)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Request-Id", id)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			r := bufio.NewReader(resp.Body)
			for {
				line, err := r.ReadString('\n')
				if strings.Contains(line, c.end) {
					if !rec.recorded(id) {
						t.Fatalf("the caller got %q before the request was recorded", c.end)
					}
					return
				}
				if err != nil {
					t.Fatalf("the answer ended without %q: %v", c.end, err)
				}
			}
		})
	}
}
