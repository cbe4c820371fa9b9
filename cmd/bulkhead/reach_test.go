package main

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/cmd/mockllm/mock"
	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway"
	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/ratelimit"
	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// runningGateway is a gateway as `bulkhead serve` wires it (the real
// authenticator with its invalidation loop, the Redis limiter), in this
// process, on loopback, in front of the mock upstream, sharing the test
// PostgreSQL and Redis with the CLI.
type runningGateway struct {
	t    *testing.T
	url  string
	auth *auth.Authenticator
}

func startInProcessGateway(t *testing.T) *runningGateway {
	t.Helper()
	st := storetest.Open(t, store.Options{})
	rdb := storetest.Redis(t)
	upstream := mock.NewServer(mock.Options{})
	t.Cleanup(upstream.Close)
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := &fasthttp.Server{Handler: upstream.Handler, CloseOnShutdown: true}
	go up.Serve(upLn)                                                  //nolint:errcheck // ends with the test
	t.Cleanup(func() { up.ShutdownWithContext(context.Background()) }) //nolint:errcheck // test teardown

	cfg := config.Default()
	cfg.UpstreamURL = "http://" + upLn.Addr().String() + "/v1"
	// The L1 cache outlives the test's one-second deadline many times over:
	// only an invalidation event can make the gateway see a change in time.
	authn, err := auth.New(auth.Options{Store: st, Redis: rdb, RedisTimeout: time.Second, CacheTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	bg, cancel := context.WithCancel(context.Background())
	authDone := make(chan struct{})
	go func() { authn.Run(bg); close(authDone) }() //nolint:errcheck // returns nil on cancel
	lim := ratelimit.New(rdb, ratelimit.Options{Prefix: "bulkhead:rl:test:" + uuid.NewString(), Timeout: time.Second, Lease: true})
	srv, err := gateway.New(cfg, zap.NewNop(), gateway.Deps{Auth: authn, Recorder: noLog{}, Limiter: lim})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		cancel()
		<-authDone
	})
	g := &runningGateway{t: t, url: "http://" + ln.Addr().String(), auth: authn}
	// Subscribed to invalidations (the loop purges L1 once it is), so that
	// what the test caches from here on is what an event must undo.
	g.await("the invalidation subscription", func() bool { return authn.Stats().Purges > 0 }, 10*time.Second)
	return g
}

// chat sends one chat completion with key and returns the status and the
// request limit the gateway announced.
func (g *runningGateway) chat(key string) (status int, limit string) {
	g.t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(g.url + "/v1/chat/completions")
	req.Header.SetMethod("POST")
	req.Header.SetContentType("application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	req.SetBodyString(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hi"}]}`)
	if err := fasthttp.DoTimeout(req, resp, 10*time.Second); err != nil {
		g.t.Fatalf("chat: %v", err)
	}
	return resp.StatusCode(), string(resp.Header.Peek("X-Ratelimit-Limit-Requests"))
}

// await polls cond until it holds, failing the test after d.
func (g *runningGateway) await(what string, cond func() bool, d time.Duration) {
	g.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			g.t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// createKeyCLI runs `bulkhead key create --json` and returns the key and its id.
func createKeyCLI(t *testing.T, org string, rpm string) (key, id string) {
	t.Helper()
	out, _, err := cli(t, "key", "create", "--org", org, "--name", "reach", "--rpm", rpm, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var k struct{ ID, Key string }
	if err := json.Unmarshal([]byte(out), &k); err != nil {
		t.Fatalf("key create --json: %v\n%s", err, out)
	}
	return k.Key, k.ID
}

// The CLI's own code path reaches a running gateway: after `key update
// --rpm`, `key revoke` and `org delete` return, the gateway, which has the
// key cached for an hour, applies the new limit or answers 401 within a
// second. Nothing but the commands themselves tells it.
func TestCLIChangesReachRunningGateway(t *testing.T) {
	g := startInProcessGateway(t)
	out, _, err := cli(t, "org", "create", "--name", "reach")
	if err != nil {
		t.Fatal(err)
	}
	org := strings.TrimSpace(out)
	key1, id1 := createKeyCLI(t, org, "1000")
	key2, _ := createKeyCLI(t, org, "1000")
	for _, k := range []string{key1, key2} {
		if status, limit := g.chat(k); status != 200 || limit != "1000" {
			t.Fatalf("before any change: %d, limit %q; want 200 and 1000", status, limit)
		}
	}

	if _, _, err := cli(t, "key", "update", id1, "--rpm", "7"); err != nil {
		t.Fatal(err)
	}
	var status int
	var limit string
	g.await("key update --rpm 7 applied by the running gateway", func() bool {
		status, limit = g.chat(key1)
		return status == 200 && limit == "7"
	}, time.Second)

	if _, _, err := cli(t, "key", "revoke", id1); err != nil {
		t.Fatal(err)
	}
	g.await("key revoke applied by the running gateway", func() bool { status, _ = g.chat(key1); return status == 401 }, time.Second)

	if status, _ := g.chat(key2); status != 200 {
		t.Fatalf("the organization's other key before org delete: %d", status)
	}
	if _, _, err := cli(t, "org", "delete", org); err != nil {
		t.Fatal(err)
	}
	g.await("org delete applied by the running gateway", func() bool { status, _ = g.chat(key2); return status == 401 }, time.Second)
}
