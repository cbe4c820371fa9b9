package mock

import (
	"net"
	"testing"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// BenchmarkChatNonStream measures the handler alone on a typical
// non-stream chat request, the upstream's hot path in gateway benchmarks.
func BenchmarkChatNonStream(b *testing.B) {
	s := NewServer(Options{})
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod("POST")
	ctx.Request.SetRequestURI("/v1/chat/completions")
	ctx.Request.Header.SetContentType("application/json")
	ctx.Request.SetBodyString(helloChat)
	b.ReportAllocs()
	for b.Loop() {
		ctx.Response.Reset()
		s.Handler(&ctx)
	}
	if ctx.Response.StatusCode() != 200 {
		b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
	b.SetBytes(int64(len(ctx.Response.Body())))
}

// BenchmarkChatNonStreamInmemory measures a full HTTP round trip through
// fasthttp over an in-memory listener, from parallel clients.
func BenchmarkChatNonStreamInmemory(b *testing.B) {
	ln := fasthttputil.NewInmemoryListener()
	s := NewServer(Options{})
	srv := &fasthttp.Server{Handler: s.Handler}
	go func() { _ = srv.Serve(ln) }() // Serve returns nil after Shutdown below
	defer func() {
		if err := srv.Shutdown(); err != nil {
			b.Errorf("shutting down: %v", err)
		}
	}()
	client := &fasthttp.Client{Dial: func(string) (net.Conn, error) { return ln.Dial() }}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.Header.SetMethod("POST")
		req.SetRequestURI("http://mockllm/v1/chat/completions")
		req.SetBodyString(helloChat)
		for pb.Next() {
			if err := client.Do(req, resp); err != nil || resp.StatusCode() != 200 {
				b.Errorf("request: %v, status %d", err, resp.StatusCode())
				return
			}
		}
	})
}
