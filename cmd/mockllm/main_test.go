package main

import (
	"bufio"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestRunAnnouncesAndShutsDown(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-chunks", "3"}, pw, io.Discard)
		pw.Close()
	}()

	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("reading announcement: %v", err)
	}
	addr, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "mockllm listening on ")
	if !ok || strings.HasSuffix(addr, ":0") {
		t.Fatalf("announcement %q, want \"mockllm listening on HOST:PORT\"", line)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }() // nothing more is expected; drain anyway

	status, body, err := fasthttp.GetTimeout(nil, "http://"+addr+"/v1/models", 5*time.Second)
	if err != nil || status != 200 || !strings.Contains(string(body), `"object":"list"`) {
		t.Fatalf("GET /v1/models: %d %s %v", status, body, err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"zero chunks", []string{"-chunks", "0"}},
		{"fail rate above 1", []string{"-fail-rate", "1.5"}},
		{"negative latency", []string{"-latency", "-1s"}},
		{"unknown flag", []string{"-nope"}},
		{"stray argument", []string{"extra"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			if err := run(t.Context(), tt.args, &out, io.Discard); err == nil {
				t.Error("run accepted bad flags")
			}
			if out.Len() != 0 {
				t.Errorf("printed %q despite failing", out.String())
			}
		})
	}
}
