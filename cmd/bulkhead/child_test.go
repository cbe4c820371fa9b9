package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/bulkheadhq/bulkhead/cmd/mockllm/mock"
)

// childEnv marks the test binary re-run as `bulkhead serve` by
// startGateway: TestMain then serves instead of testing.
const childEnv = "GO_TEST_RUN_AS_BULKHEAD_SERVE" // not BULKHEAD_TEST_*: no setting, an internal marker

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := run(ctx, []string{"serve"}, os.LookupEnv, os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// freeAddr returns a loopback address no one listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// startGateway runs `bulkhead serve` as a child process with env added to
// this process's environment, and waits until /readyz answers 200.
func startGateway(t *testing.T, env map[string]string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	if _, ok := env["BULKHEAD_CONTROL_LISTEN"]; !ok {
		cmd.Env = append(cmd.Env, "BULKHEAD_CONTROL_LISTEN=") // no control plane unless the test asks
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill() //nolint:errcheck // best effort at the end of the test
			cmd.Wait()         //nolint:errcheck // killed
		}
	})
	ready := "http://" + env["BULKHEAD_ADMIN_LISTEN"] + "/readyz"
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(ready)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return cmd
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway did not become ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cliTenant creates an organization and a key with a generous limit
// through the CLI, and returns the organization's id and the key.
func cliTenant(t *testing.T, name string) (org, key string) {
	t.Helper()
	out, _, err := cli(t, "org", "create", "--name", name)
	if err != nil {
		t.Fatal(err)
	}
	org = strings.TrimSpace(out)
	out, _, err = cli(t, "key", "create", "--org", org, "--name", name, "--rpm", "1000000", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal([]byte(out), &k); err != nil {
		t.Fatal(err)
	}
	return org, k.Key
}

// mockUpstream serves the mock LLM on loopback for the test's duration and
// returns its base URL.
func mockUpstream(t *testing.T, opts mock.Options) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := mock.NewServer(opts)
	srv := &fasthttp.Server{Handler: up.Handler}
	go srv.Serve(ln) //nolint:errcheck // shut down at cleanup
	t.Cleanup(func() { up.Close(); srv.Shutdown() })
	return "http://" + ln.Addr().String() + "/v1"
}
