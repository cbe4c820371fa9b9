package gateway

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/bulkheadhq/bulkhead/config"
)

func gzipped(t testing.TB, s string) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := io.WriteString(zw, s); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func deflated(t testing.TB, s string) []byte {
	var b bytes.Buffer
	zw := zlib.NewWriter(&b)
	if _, err := io.WriteString(zw, s); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

const squeezedChat = `{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"squeezed"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`

var squeezedStream = []string{
	"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"squeezed \"}}]}\n\n",
	"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"stream\"},\"finish_reason\":\"stop\"}]}\n\n",
	"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n",
	"data: [DONE]\n\n",
}

// compressingUpstream ignores the Accept-Encoding it is sent and answers
// compressed, in the coding named by the request's model; it remembers the
// Accept-Encoding it saw.
func compressingUpstream(t *testing.T, n network, sawAccept *sync.Map) string {
	return n.listen(func(rc *fasthttp.RequestCtx) {
		var req struct {
			Model  string `json:"model"`
			Stream bool   `json:"stream"`
		}
		json.Unmarshal(rc.PostBody(), &req) //nolint:errcheck // the gateway sent valid JSON
		sawAccept.Store(req.Model, string(rc.Request.Header.Peek("Accept-Encoding")))
		coding, _, _ := strings.Cut(req.Model, "-")
		rc.Response.Header.Set("Content-Encoding", coding)
		if !req.Stream {
			rc.SetContentType("application/json")
			switch strings.ToLower(coding) {
			case "gzip":
				rc.SetBody(gzipped(t, squeezedChat))
			case "deflate":
				rc.SetBody(deflated(t, squeezedChat))
			default: // br, zstd, …: bytes the gateway cannot read
				rc.SetBody([]byte{0x1b, 0x2f, 0x00, 0xa4, 0x8c, 0x0d})
			}
			return
		}
		rc.SetContentType("text/event-stream")
		rc.SetBodyStreamWriter(func(w *bufio.Writer) {
			if strings.ToLower(coding) != "gzip" {
				w.WriteString("\x1b\x2f\x00 not sse") //nolint:errcheck // the test reads what arrived
				return
			}
			zw := gzip.NewWriter(w)
			for _, ev := range squeezedStream { // one flushed gzip block per event, as a compressing SSE server sends
				zw.Write([]byte(ev)) //nolint:errcheck // the test reads what arrived
				zw.Flush()           //nolint:errcheck // the test reads what arrived
				w.Flush()            //nolint:errcheck // the test reads what arrived
			}
			zw.Close() //nolint:errcheck // the test reads what arrived
		})
	})
}

// An upstream that compresses its answer although the gateway asked for
// identity: gzip and deflate are decoded, anything else is a 502; never
// does the caller get compressed bytes without their Content-Encoding.
func TestCompressedUpstreamAnswers(t *testing.T) {
	n := newMemNet(t)
	var sawAccept sync.Map
	addr := compressingUpstream(t, n, &sawAccept)
	h := newFakeHarness(t, n, func(cfg *config.Config) { cfg.UpstreamURL = "http://" + addr + "/v1" })
	_, key, _ := h.tenant(1000)

	for _, model := range []string{"gzip-json", "deflate-json", "GZIP-json"} {
		t.Run(model, func(t *testing.T) {
			r := h.do("POST", "/v1/chat/completions", `{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`, bearer(key)...)
			if r.status != 200 || string(r.body) != squeezedChat || r.headers["content-encoding"] != "" {
				t.Fatalf("status %d content-encoding %q body %q, want the decoded answer", r.status, r.headers["content-encoding"], r.body)
			}
			rec := h.rec.find(t, r.headers["x-request-id"])
			if rec.Response != "squeezed" || rec.TotalTokens != 5 || rec.UsageSource != "upstream" {
				t.Errorf("record %+v", rec)
			}
		})
	}
	t.Run("gzip-sse", func(t *testing.T) {
		r := h.do("POST", "/v1/chat/completions", `{"model":"gzip-sse","stream":true,"messages":[{"role":"user","content":"hi"}]}`, bearer(key)...)
		want := squeezedStream[0] + squeezedStream[1] + squeezedStream[3] // the usage chunk the gateway asked for is dropped
		if r.status != 200 || string(r.body) != want || r.headers["content-encoding"] != "" {
			t.Fatalf("status %d content-encoding %q body %q, want the decoded stream", r.status, r.headers["content-encoding"], r.body)
		}
		rec := h.rec.find(t, r.headers["x-request-id"])
		if rec.Response != "squeezed stream" || rec.TotalTokens != 5 || rec.Status != 200 {
			t.Errorf("record %+v", rec)
		}
	})
	for _, tc := range []struct{ model, body string }{
		{"br-json", `{"model":"br-json","messages":[]}`},
		{"zstd-json", `{"model":"zstd-json","messages":[]}`},
		{"br-sse", `{"model":"br-sse","stream":true,"messages":[]}`},
		{"gzip, br-json", `{"model":"gzip, br-json","messages":[]}`},
	} {
		t.Run(tc.model, func(t *testing.T) {
			r := h.do("POST", "/v1/chat/completions", tc.body, bearer(key)...)
			if _, typ, code, _ := openAIError(t, r.body); r.status != 502 || typ != "server_error" || code != "upstream_error" {
				t.Fatalf("status %d %s, want 502 upstream_error", r.status, r.body)
			}
			if rec := h.rec.find(t, r.headers["x-request-id"]); rec.Status != 502 {
				t.Errorf("recorded status %d", rec.Status)
			}
		})
	}
	sawAccept.Range(func(model, accept any) bool {
		if accept != "identity" {
			t.Errorf("%s: upstream was sent Accept-Encoding %q, want identity", model, accept)
		}
		return true
	})
}

// bodyStream is an upstream body stream over r.
type bodyStream struct {
	io.Reader
	closed error
}

func (b *bodyStream) CloseWithError(err error) error { b.closed = err; return nil }

// A compressed body that decodes beyond the cap (maxUpstreamBody in the
// proxy) is refused however small it arrives, buffered or streamed.
func TestCompressedUpstreamBomb(t *testing.T) {
	const limit = 256 << 10
	bomb := gzipped(t, strings.Repeat("\x00", 4*limit)) // 1 MiB in about 1 KB
	var resp fasthttp.Response
	resp.Header.Set("Content-Encoding", "gzip")
	resp.SetBody(bomb)
	if _, err := readUpstreamBody(&resp, limit); !errors.Is(err, errUpstreamTooLarge) {
		t.Errorf("buffered bomb: error %v, want errUpstreamTooLarge", err)
	}
	resp.SetBodyStream(&bodyStream{Reader: bytes.NewReader(bomb)}, -1)
	n, err := io.Copy(io.Discard, upstreamStream(&resp, limit))
	if !errors.Is(err, errUpstreamTooLarge) || n != limit {
		t.Errorf("streamed bomb: %d bytes then %v, want %d then errUpstreamTooLarge", n, err, limit)
	}

	// Exactly the cap is fine.
	exact := gzipped(t, strings.Repeat("x", limit))
	resp.SetBody(exact)
	if b, err := readUpstreamBody(&resp, limit); err != nil || len(b) != limit {
		t.Errorf("buffered body of exactly the cap: %d bytes, %v", len(b), err)
	}
	resp.SetBodyStream(&bodyStream{Reader: bytes.NewReader(exact)}, -1)
	if n, err := io.Copy(io.Discard, upstreamStream(&resp, limit)); err != nil || n != limit {
		t.Errorf("stream of exactly the cap: %d bytes, %v", n, err)
	}
}
