package gateway

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/bulkheadhq/bulkhead/config"
)

// A member whose name only case-folds to one the gateway reads would reach
// an upstream that decodes JSON case-insensitively (any Go server, the mock
// included) as the member it acts on: another model, an unrecorded stream,
// another prompt. The gateway refuses it before forwarding, naming it as
// sent.
func TestCaseVariantMembersRefused(t *testing.T) {
	n := newMemNet(t)
	var c captured
	addr := captureUpstream(n, &c, 200, okChat)
	h := newFakeHarness(t, n, func(cfg *config.Config) { cfg.UpstreamURL = "http://" + addr + "/v1" })
	_, key, _ := h.tenant(1000)
	long := strings.Repeat("six thousand tokens ", 1200)
	for _, tc := range []struct {
		name, path, body, param string
	}{
		{"MODEL beside model", "/v1/chat/completions", `{"model":"gpt-4o-mini","MODEL":"o1-pro","messages":[{"role":"user","content":"hello"}]}`, "MODEL"},
		{"Stream beside stream", "/v1/chat/completions", `{"model":"gpt-4o-mini","stream":false,"Stream":true,"messages":[{"role":"user","content":"hello"}]}`, "Stream"},
		{"Messages beside messages", "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}],"Messages":[{"role":"user","content":"` + long + `"}]}`, "Messages"},
		{"lone Stream", "/v1/responses", `{"model":"gpt-4o-mini","input":"hello","Stream":true}`, "Stream"},
		{"long s", "/v1/completions", `{"model":"gpt-4o-mini","prompt":"hello","\u017ftream":true}`, "\u017ftream"},
		{"Kelvin sign", "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[],"max_to\u212aens":100000}`, "max_to\u212aens"},
		{"Include_Usage", "/v1/chat/completions", `{"model":"gpt-4o-mini","stream":true,"stream_options":{"Include_Usage":false},"messages":[]}`, "stream_options.Include_Usage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do("POST", tc.path, tc.body, bearer(key)...)
			var e struct {
				Error struct {
					Type  string  `json:"type"`
					Param *string `json:"param"`
				} `json:"error"`
			}
			if err := json.Unmarshal(r.body, &e); err != nil || r.status != 400 || e.Error.Type != "invalid_request_error" ||
				e.Error.Param == nil || *e.Error.Param != tc.param {
				t.Fatalf("status %d %s, want 400 invalid_request_error with param %q", r.status, r.body, tc.param)
			}
			if rec := h.rec.find(t, r.headers["x-request-id"]); rec.Status != 400 {
				t.Errorf("recorded status %d", rec.Status)
			}
		})
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.body != nil {
		t.Errorf("the upstream received %s", c.body)
	}
}
