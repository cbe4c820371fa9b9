package gateway

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bulkheadhq/bulkhead/config"
)

// failingLog is a request log that cannot take records (a full spool).
type failingLog struct{ memRecorder }

func (*failingLog) Admit() error { return errors.New("spool full") }

// After a mix of good and bad traffic, no key, provider credential or
// prompt text appears in the gateway's logs (debug level included) or in
// any error body (THREATS 26, 44).
func TestLogsAndErrorsKeepSecrets(t *testing.T) {
	n := newMemNet(t)
	var c captured
	echo := captureUpstream(n, &c, 500, `{"error":{"message":"internal: `+providerKey+` at db-7.internal"}}`)
	h := newFakeHarness(t, n, func(cfg *config.Config) {
		cfg.Upstreams = []config.Upstream{{Name: "echo", Kind: "openai", URL: "http://" + echo + "/v1", APIKey: providerKey, Models: []string{"echo"}}}
	})
	org, key, _ := h.tenant(3)
	const secretPrompt = "TOP-SECRET-PROMPT-TEXT"
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + secretPrompt + `"}]}`
	var bodies []string
	for _, r := range []reply{
		h.do("POST", "/v1/chat/completions", body, bearer(key)...),
		h.do("POST", "/v1/chat/completions", strings.Replace(body, "}]}", "}],\"stream\":true}", 1), bearer(key)...),
		h.do("POST", "/v1/chat/completions", strings.Replace(body, "gpt-4o-mini", "echo", 1), bearer(key)...),
		h.do("POST", "/v1/chat/completions", body, bearer(key)...), // 429: over the limit of 3
		h.do("POST", "/v1/chat/completions", body, bearer(key[:len(key)-2]+"xx")...),
		h.do("POST", "/v1/chat/completions", body, bearer("sk_"+org.String()+"_"+strings.Repeat("Q", 49))...),
		h.do("POST", "/v1/chat/completions", `{"model":`+secretPrompt, bearer(key)...),
	} {
		bodies = append(bodies, string(r.body))
	}
	// The three answered requests (two 200s and the echo's 502; the rest
	// were refused before the log) each have their access line, all of
	// which the checks below read.
	var logs string
	deadline := time.Now().Add(5 * time.Second)
	for {
		logs = h.logs.String()
		if strings.Count(logs, `"msg":"request"`) >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("want 3 access log lines, captured:\n%s", logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := strings.Count(logs, `"msg":"request"`); n != 3 {
		t.Errorf("%d access log lines, want 3:\n%s", n, logs)
	}
	for what, needle := range map[string]string{
		"the gateway key":     key[40:80],
		"the provider key":    providerKey,
		"prompt text":         secretPrompt,
		"an internal host":    "db-7.internal",
		"a key-shaped string": "sk_" + org.String() + "_",
	} {
		if strings.Contains(logs, needle) {
			t.Errorf("logs contain %s", what)
		}
		for i, b := range bodies {
			if strings.Contains(b, needle) && what != "prompt text" {
				t.Errorf("error body %d contains %s: %s", i, what, b)
			}
		}
	}
	for i, b := range bodies[2:] {
		if strings.Contains(b, secretPrompt) {
			t.Errorf("error body %d echoes the prompt: %s", i+2, b)
		}
	}
}

// A request log that cannot take records turns requests away before they
// are forwarded: nothing accepted is ever dropped.
func TestFullLogRefusesRequests(t *testing.T) {
	h := newFakeHarness(t, nil, nil)
	_, key, _ := h.tenant(1000)
	fl := &failingLog{}
	srv, err := New(h.cfg, h.srv.log, h.deps(Deps{Recorder: fl}))
	if err != nil {
		t.Fatal(err)
	}
	h2 := h.serve(srv)
	r := h2.do("POST", "/v1/chat/completions", chatBody, bearer(key)...)
	if _, _, code, _ := openAIError(t, r.body); r.status != 503 || code != "request_log_full" {
		t.Errorf("full log: %d %s", r.status, r.body)
	}
	if len(fl.recs) != 0 {
		t.Errorf("a refused request was recorded")
	}
}
