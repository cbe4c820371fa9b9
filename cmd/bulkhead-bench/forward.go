package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
	"github.com/valyala/fasthttp"
)

// forward runs the floor: a bare fasthttp pass-through that copies each
// request to the upstream and the answer back, streaming bodies as they
// come, with no parsing and no authentication.
func forward(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("forward", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	upstream := fs.String("upstream", "", "upstream host:port")
	if err := fs.Parse(args); err != nil {
		return err
	}
	client := &fasthttp.HostClient{Addr: *upstream, MaxConns: 4096, ReadTimeout: time.Minute, StreamResponseBody: true}
	srv := &fasthttp.Server{
		Handler: func(rc *fasthttp.RequestCtx) {
			req := &rc.Request
			req.SetHost(*upstream)
			resp := fasthttp.AcquireResponse()
			if err := client.Do(req, resp); err != nil {
				fasthttp.ReleaseResponse(resp)
				rc.Error(err.Error(), fasthttp.StatusBadGateway)
				return
			}
			rc.Response.Header.SetStatusCode(resp.StatusCode())
			rc.Response.Header.SetContentTypeBytes(resp.Header.ContentType())
			body := resp.BodyStream()
			if body == nil {
				rc.SetBody(resp.Body())
				fasthttp.ReleaseResponse(resp)
				return
			}
			rc.SetBodyStream(&releasingReader{resp: resp}, -1)
		},
		NoDefaultServerHeader: true,
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Printf("forward listening on %s\n", ln.Addr())
	go func() {
		<-ctx.Done()
		srv.Shutdown() //nolint:errcheck // exiting
	}()
	return srv.Serve(ln)
}

// releasingReader streams an upstream body and releases the response at
// the end.
type releasingReader struct{ resp *fasthttp.Response }

func (r *releasingReader) Read(p []byte) (int, error) { return r.resp.BodyStream().Read(p) }

func (r *releasingReader) Close() error {
	err := r.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(r.resp)
	return err
}

// floorRig is the mock upstream and the floor forwarder in front of it,
// as the benchmarks that report "× floor" start them (keys, placement).
type floorRig struct {
	mock, floor *proc
	url         string // the floor's chat completions URL
}

// startFloor starts the mock upstream of bin and the floor forwarder
// (this binary's forward) in front of it, and warms the floor up with a
// second of load at conns connections.
func startFloor(ctx context.Context, bin string, conns int) (*floorRig, error) {
	mock, err := start(ctx, nil, filepath.Join(bin, "mockllm"), "-listen", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	self, _ := os.Executable()
	floor, err := start(ctx, nil, self, "forward", "-listen", "127.0.0.1:0", "-upstream", mock.addr)
	if err != nil {
		mock.stop()
		return nil, err
	}
	r := &floorRig{mock: mock, floor: floor, url: "http://" + floor.addr + "/v1/chat/completions"}
	attack(r.url, headers(""), vegeta.Rate{Freq: 200, Per: time.Second}, time.Second, conns)
	return r, nil
}

func (r *floorRig) stop() {
	r.floor.stop()
	r.mock.stop()
}
