package gateway

import (
	"bytes"
	"errors"
	"io"
	"log"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/bulkheadhq/bulkhead/config"
)

// Malformed requests that carry a caller's key and a prompt leave neither
// in any log: not in the gateway's zap output, not through the std log
// package, not on stderr, where libraries' own default loggers write
// (THREATS 57). Each still gets its 4xx and one structured line.
func TestMalformedRequestsLogNoSecrets(t *testing.T) {
	var std bytes.Buffer
	log.SetOutput(&std)
	defer log.SetOutput(io.Discard) // restored below; Discard only if the test dies first
	stderr := captureStderr(t)
	stderrDone := false
	defer func() {
		if !stderrDone {
			stderr()
		}
	}()

	// On loopback: a request that ends only where its sender closes its
	// side ("bare LF") needs a half-close, which the in-memory network
	// lacks.
	h := newFakeHarness(t, loopback{t}, func(cfg *config.Config) { cfg.MaxRequestBodyBytes = 1024 })
	_, key, _ := h.tenant(1000)
	const marker = "MARKER-PROMPT-5c1e"
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + marker + `"}]}`
	cl := strconv.Itoa(len(body))
	head := func(method string) string {
		return method + " /v1/chat/completions HTTP/1.1\r\nAuthorization: Bearer " + key + "\r\nX-Api-Key: " + key + "\r\nContent-Type: application/json\r\n"
	}
	pre := head("POST")
	kinds := map[string]string{
		"duplicate Content-Length":  pre + "Host: x\r\nContent-Length: " + cl + "\r\nContent-Length: " + cl + "0\r\n\r\n" + body,
		"duplicate Host":            pre + "Host: x\r\nHost: y\r\nContent-Length: " + cl + "\r\n\r\n" + body,
		"bad Content-Length":        pre + "Host: x\r\nContent-Length: 12x\r\n\r\n" + body,
		"negative Content-Length":   pre + "Host: x\r\nContent-Length: -5\r\n\r\n" + body,
		"bad Transfer-Encoding":     pre + "Host: x\r\nTransfer-Encoding: gzip, xchunked\r\n\r\n" + body,
		"broken chunk":              pre + "Host: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + body + "\r\n0\r\n\r\n",
		"header too large":          pre + "Host: x\r\nX-Pad: " + strings.Repeat("p", 20<<10) + "\r\nContent-Length: " + cl + "\r\n\r\n" + body,
		"body too large":            pre + "Host: x\r\nContent-Length: 4000\r\n\r\n" + body + strings.Repeat(" ", 4000-len(body)),
		"bad method":                head("P@ST") + "Host: x\r\nContent-Length: " + cl + "\r\n\r\n" + body,
		"bare LF":                   strings.ReplaceAll(pre+"Host: x\r\nContent-Length: "+cl+"\r\n\r\n", "\r\n", "\n") + body,
		"NUL in a header":           pre + "Host: x\r\nX-Foo: a\x00" + marker + "\r\nContent-Length: " + cl + "\r\n\r\n" + body,
		"space before colon":        pre + "Host: x\r\nContent-Length : " + cl + "\r\n\r\n" + body,
		"Content-Length and chunks": pre + "Host: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n" + marker[:5] + "\r\n0\r\n\r\n",
	}
	for name, raw := range kinds {
		out := sendRaw(t, h, raw)
		t.Logf("%s -> %q", name, firstLine(out))
		if name != "Content-Length and chunks" && !strings.HasPrefix(out, "HTTP/1.1 4") {
			t.Errorf("%s: answered %q, want a 4xx", name, firstLine(out))
		}
	}
	log.SetOutput(io.Discard)
	stderrDone = true
	captured := map[string]string{"the gateway's zap log": h.logs.String(), "the std log": std.String(), "stderr": stderr()}
	if !strings.Contains(captured["the gateway's zap log"], `"msg":"malformed request"`) {
		t.Errorf("no structured line for malformed requests:\n%s", captured["the gateway's zap log"])
	}
	for where, text := range captured {
		for what, needle := range map[string]string{"the key": key[len(key)-40:], "a bearer credential": "Bearer", "the prompt": marker} {
			if strings.Contains(text, needle) {
				t.Errorf("%s contains %s:\n%s", where, what, text)
			}
		}
	}
}

// sendRaw writes raw to the gateway, ends its side of the connection and
// returns what the gateway answers until it closes its side.
func sendRaw(t *testing.T, h *harness, raw string) string {
	t.Helper()
	conn, err := h.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c, ok := conn.(*net.TCPConn)
	if !ok {
		t.Fatal("sendRaw needs a half-close: serve the harness on loopback")
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, raw) //nolint:errcheck // the gateway may answer and close before reading it all
	c.CloseWrite()         //nolint:errcheck // as above
	b, _ := io.ReadAll(c)  // a reset after the answer is fine
	return string(b)
}

// An upstream whose malformed response echoes the provider key does not
// put it in the log through the client's parse error.
func TestMalformedUpstreamResponseLogsNoSecret(t *testing.T) {
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
				c.SetDeadline(time.Now().Add(5 * time.Second))
				c.Read(make([]byte, 64<<10))                                                                                               //nolint:errcheck // the request is not looked at
				io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Echo: Bearer "+providerKey+"\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}") //nolint:errcheck // the gateway sees what it sees
			}()
		}
	}()
	h := newFakeHarness(t, n, func(cfg *config.Config) { cfg.UpstreamURL = "http://" + addr + "/v1" })
	_, key, _ := h.tenant(1000)
	if r := h.do("POST", "/v1/chat/completions", chatBody, bearer(key)...); r.status != 502 {
		t.Errorf("malformed upstream response: %d %s", r.status, r.body)
	}
	logs := h.logs.String()
	if !strings.Contains(logs, `"msg":"request failed"`) {
		t.Fatalf("the upstream failure was not logged:\n%s", logs)
	}
	if strings.Contains(logs, providerKey) || strings.Contains(logs, "Bearer") {
		t.Errorf("the log quotes the upstream's response:\n%s", logs)
	}
}

// LibraryLogger keeps a library line's shape and its numbers and
// addresses, and nothing a caller could have written.
func TestLibraryLoggerRedacts(t *testing.T) {
	core, obs := observer.New(zap.DebugLevel)
	l := NewLibraryLogger(zap.New(core))
	const secret = "sk_SECRET_0123456789"
	addr := &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 4242}
	l.Printf("conn %q<->%q: %v; got %s and %q, n=%d, took %s, %v",
		addr, net.IPv4(10, 9, 9, 9), errors.New("contents: Authorization: Bearer "+secret),
		"Bearer "+secret, []byte(secret), 42, 3*time.Second, struct{ S string }{secret})
	entries := obs.All()
	if len(entries) != 1 {
		t.Fatalf("%d entries, want 1", len(entries))
	}
	line := entries[0].ContextMap()["line"].(string)
	for _, want := range []string{`"10.1.2.3:4242"`, `"10.9.9.9"`, "other", "n=42", "took 3s", "[redacted]"} {
		if !strings.Contains(line, want) {
			t.Errorf("line %q lacks %q", line, want)
		}
	}
	if strings.Contains(line, secret) || strings.Contains(line, "Bearer") {
		t.Errorf("line %q carries caller text", line)
	}
}
