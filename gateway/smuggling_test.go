package gateway

import (
	"io"
	"strings"
	"testing"
	"time"
)

// rawExchange writes raw bytes to the gateway and returns everything it
// answers until it closes the connection or goes quiet.
func rawExchange(t *testing.T, h *harness, raw string) string {
	t.Helper()
	c, err := h.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil { // the deadline: the gateway kept the connection open
		t.Errorf("connection not closed after an ambiguous request: %v", err)
	}
	return string(b)
}

// Smuggling probes (THREATS 34): ambiguous framing gets 400, or, for
// Content-Length next to Transfer-Encoding, is framed by the chunked
// encoding alone; either way the connection is closed after one answer, so
// no second request hides behind the first.
func TestSmugglingProbes(t *testing.T) {
	h := newFakeHarness(t, nil, nil)
	for name, raw := range map[string]string{
		"CL.TE":            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
		"TE.CL":            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
		"duplicate CL":     "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcdeGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
		"obfuscated TE":    "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
		"bare LF in chunk": "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;x\nabc\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			out := rawExchange(t, h, raw)
			if strings.Count(out, "HTTP/1.1 ") > 1 || strings.Contains(out, `{"status":"ok"}`) {
				t.Errorf("a second request was answered:\n%s", out)
			}
			t.Logf("%s -> %q", name, firstLine(out))
		})
	}
}

func firstLine(s string) string {
	if i := strings.Index(s, "\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}
