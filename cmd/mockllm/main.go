// Command mockllm is a deterministic, OpenAI-compatible fake LLM upstream
// for demos, tests and throughput benchmarks of the Bulkhead gateway.
//
// It serves /v1/chat/completions, /v1/completions, /v1/embeddings,
// /v1/responses and /v1/models, plus /v1/_echo/headers for proxy tests.
// Per-request headers steer it: x-mock-status (inject an error status),
// x-mock-latency, x-mock-chunks and x-mock-cached-tokens (prompt tokens
// reported as read from the prompt cache). Once listening it prints exactly one
// line, "mockllm listening on ADDR", to stdout, so callers can start it with
// -listen 127.0.0.1:0 and read the bound address. SIGINT or SIGTERM shut it
// down cleanly with exit status 0.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/bulkheadhq/bulkhead/cmd/mockllm/mock"
)

// shutdownTimeout bounds how long a shutdown waits for open connections.
const shutdownTimeout = 5 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mockllm:", err)
		os.Exit(1)
	}
}

// run parses args, serves until ctx is done, then shuts down. It writes the
// listening line to stdout and flag usage to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mockllm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8081", "address to listen on; port 0 picks a free port")
	var opts mock.Options
	fs.DurationVar(&opts.Latency, "latency", 0, "delay before the first byte of each inference response")
	fs.DurationVar(&opts.ChunkDelay, "chunk-delay", 0, "delay before each content chunk of a stream")
	fs.IntVar(&opts.Chunks, "chunks", mock.DefaultChunks, "number of content chunks in a stream")
	fs.Float64Var(&opts.FailRate, "fail-rate", 0, "probability (0..1) of an injected 500 per inference request")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	var zeroChunks error
	if opts.Chunks == 0 { // Options reads 0 as "default"; on the command line it is a mistake
		zeroChunks = errors.New("chunks 0: must be at least 1")
	}
	if err := errors.Join(zeroChunks, opts.Validate()); err != nil {
		return fmt.Errorf("invalid flags: %w", err)
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", *listen, err)
	}
	m := mock.NewServer(opts)
	srv := &fasthttp.Server{
		Handler:         m.Handler,
		Name:            "mockllm",
		ReadTimeout:     30 * time.Second,
		IdleTimeout:     60 * time.Second,
		CloseOnShutdown: true,
	}
	if _, err := fmt.Fprintf(stdout, "mockllm listening on %s\n", ln.Addr()); err != nil {
		return errors.Join(fmt.Errorf("announcing address: %w", err), ln.Close())
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		m.Close()
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}

	m.Close() // end in-flight streams so the shutdown below need not wait for them
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.ShutdownWithContext(sctx); err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	if err := <-served; err != nil {
		return fmt.Errorf("serving: %w", err)
	}
	return nil
}
