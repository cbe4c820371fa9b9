package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// redisServer is a throwaway redis-server of one test, to kill or stall.
type redisServer struct {
	t    *testing.T
	bin  string
	port int
	cmd  *exec.Cmd
}

func startRedisServer(t *testing.T) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		storetest.Unavailable(t, "redis-server", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s := &redisServer{t: t, bin: bin, port: port}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *redisServer) addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// start runs the server on its port, again after kill.
func (s *redisServer) start() {
	s.t.Helper()
	s.cmd = exec.Command(s.bin, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning")
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("starting redis-server: %v", err)
	}
	// Wait until it answers.
	rdb := redis.NewClient(&redis.Options{Addr: s.addr(), MaxRetries: -1})
	defer rdb.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server on %s does not answer: %v", s.addr(), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kill ends the server process, as a crash would.
func (s *redisServer) kill() {
	s.t.Helper()
	if err := s.cmd.Process.Kill(); err != nil {
		s.t.Fatalf("killing redis-server: %v", err)
	}
	s.cmd.Wait() // the exit status of a killed process is an error, by design
	s.cmd = nil
}

func (s *redisServer) signal(sig syscall.Signal) {
	s.t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("signalling redis-server: %v", err)
	}
}

func (s *redisServer) stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGCONT) // in case it is stalled; an error means it is gone
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}

// faultClient honours context deadlines, as cmd/bulkhead's client does,
// but keeps go-redis's long socket timeouts (dial 5s, read 3s), so that
// only the limiter's Timeout can cut a call short. hook counts the
// commands it sends.
func faultClient(t *testing.T, addr string) (rdb *redis.Client, hook *countHook) {
	rdb = redis.NewClient(&redis.Options{
		Addr:                  addr,
		MaxRetries:            1,
		ContextTimeoutEnabled: true,
	})
	t.Cleanup(func() { rdb.Close() })
	hook = &countHook{}
	rdb.AddHook(hook)
	return rdb, hook
}

// THREATS 47 and 48: Redis killed or stalled. Decisions fall back as the
// fail mode says, only the first call pays the timeout (the breaker skips
// Redis during the cooldown), and decisions return to Redis once it is back.
func TestRedisFault(t *testing.T) {
	const (
		timeout  = 100 * time.Millisecond
		cooldown = 300 * time.Millisecond
	)
	for _, fault := range []string{"killed", "stalled"} {
		for _, mode := range []FailMode{FailLocal, FailClosed} {
			t.Run(fault+"/"+mode.String(), func(t *testing.T) {
				srv := startRedisServer(t)
				core, logs := observer.New(zapcore.InfoLevel)
				rdb, sent := faultClient(t, srv.addr())
				lim := New(rdb, Options{
					Prefix:   "bulkhead-test:rl:fault",
					Timeout:  timeout,
					Cooldown: cooldown,
					FailMode: mode,
					Log:      zap.New(core),
				})
				ctx := context.Background()
				req := PerMinute(2)
				tok := PerMinute(1000)

				// Before the fault, decisions come from Redis. A fresh
				// server, connection and script load may exceed the
				// timeout on a loaded machine, so wait for the first Redis
				// decision and count from there.
				var d Decision
				var err error
				for warm := time.Now(); ; time.Sleep(10 * time.Millisecond) {
					d, err = lim.Allow(ctx, "warm-up", req, tok)
					if err == nil && d.Source == SourceRedis {
						break
					}
					if time.Since(warm) > 10*time.Second {
						t.Fatalf("before the fault: %+v, %v; want a decision by Redis", d, err)
					}
				}
				base := lim.Stats()
				logs.TakeAll()
				since := func() Stats {
					s := lim.Stats()
					return Stats{
						RedisDecisions: s.RedisDecisions - base.RedisDecisions,
						LocalDecisions: s.LocalDecisions - base.LocalDecisions,
						RedisErrors:    s.RedisErrors - base.RedisErrors,
						Fallbacks:      s.Fallbacks - base.Fallbacks,
						Recoveries:     s.Recoveries - base.Recoveries,
					}
				}

				switch fault {
				case "killed":
					srv.kill()
				case "stalled":
					srv.signal(syscall.SIGSTOP)
				}

				// The first call finds out within the limiter's timeout, not
				// the client's 3s read timeout (slack for a loaded machine).
				began := time.Now()
				d, err = lim.Allow(ctx, "k", req, tok)
				first := time.Since(began)
				checkFallback(t, mode, d, err)
				if first > time.Second {
					t.Errorf("first call after the fault took %v; the timeout is %v", first, timeout)
				}
				if s := since(); s.RedisErrors != 1 || s.Fallbacks != 1 || s.Recoveries != 0 {
					t.Fatalf("after the first failure: Stats since the fault = %+v", s)
				}

				// During the cooldown Redis is not called at all, so no
				// call waits for it.
				began = time.Now()
				sentBefore := sent.n.Load()
				var slowest time.Duration
				for range 20 {
					t0 := time.Now()
					d, err = lim.Allow(ctx, "k", req, tok)
					slowest = max(slowest, time.Since(t0))
					checkFallback(t, mode, d, err)
				}
				if err := lim.Charge(ctx, "k", tok, 10); (mode == FailClosed) != errors.Is(err, ErrUnavailable) {
					t.Errorf("Charge during the fault: %v", err)
				}
				if time.Since(began) < cooldown {
					if n := sent.n.Load() - sentBefore; n != 0 {
						t.Errorf("%d commands sent to Redis during the cooldown, want none", n)
					}
					if s := since(); s.RedisErrors != 1 {
						t.Errorf("Redis was called during the cooldown: %d errors", s.RedisErrors)
					}
				}
				if slowest >= timeout {
					t.Errorf("a call during the cooldown took %v: it waited for Redis", slowest)
				}
				if mode == FailLocal {
					// The local limiter enforces the limit on its own: one
					// of PerMinute(2) was spent by the first fallback call.
					if s := since(); s.LocalDecisions != 21 {
						t.Errorf("LocalDecisions = %d, want 21", s.LocalDecisions)
					}
					if d.Allowed || d.Requests.Remaining != 0 {
						t.Errorf("local limiter after 21 calls: %+v, want rejected", d)
					}
				}

				switch fault {
				case "killed":
					srv.start()
				case "stalled":
					srv.signal(syscall.SIGCONT)
				}
				back := time.Now()
				for {
					d, err = lim.Allow(ctx, "k", req, tok)
					if err == nil && d.Source == SourceRedis {
						break
					}
					if time.Since(back) > cooldown+2*time.Second {
						t.Fatalf("decisions did not return to Redis: %+v, %v", d, err)
					}
					time.Sleep(10 * time.Millisecond)
				}
				t.Logf("first failing call %v, slowest call in the cooldown %v, back on Redis %v after the server came back",
					first.Round(time.Microsecond), slowest.Round(time.Microsecond), time.Since(back).Round(time.Millisecond))
				if s := since(); s.Fallbacks != 1 || s.Recoveries != 1 || s.RedisDecisions != 1 {
					t.Errorf("after recovery: Stats since the fault = %+v, want 1 fallback, 1 recovery, 1 Redis decision", s)
				}

				// One warning for the switch, one info for the return.
				var warns, infos int
				for _, e := range logs.All() {
					switch e.Level {
					case zapcore.WarnLevel:
						warns++
					case zapcore.InfoLevel:
						infos++
					}
				}
				if warns != 1 || infos != 1 {
					t.Errorf("logged %d warnings and %d infos, want 1 and 1: %v", warns, infos, messages(logs))
				}
			})
		}
	}
}

func checkFallback(t *testing.T, mode FailMode, d Decision, err error) {
	t.Helper()
	switch mode {
	case FailLocal:
		if err != nil || d.Source != SourceLocal {
			t.Fatalf("FailLocal: %+v, %v; want a local decision", d, err)
		}
	case FailClosed:
		if !errors.Is(err, ErrUnavailable) || d.Allowed || d.Source != SourceNone {
			t.Fatalf("FailClosed: %+v, %v; want ErrUnavailable", d, err)
		}
	}
}

func messages(logs *observer.ObservedLogs) []string {
	var out []string
	for _, e := range logs.All() {
		out = append(out, fmt.Sprintf("%s %s", e.Level, e.Message))
	}
	return out
}

// The breaker probes with one call at a time: while a probe is out, the
// others fall back at once.
func TestBreakerProbesOneAtATime(t *testing.T) {
	f := &fakeRedis{err: errors.New("connection refused")}
	lim := newLimiter(f, Options{Cooldown: time.Hour})
	for range 5 {
		allow(t, lim, "k", PerMinute(10), Limit{})
	}
	if f.calls != 1 {
		t.Fatalf("Redis called %d times during the cooldown, want 1", f.calls)
	}
	// End the cooldown; the next call probes and fails, the one after it
	// does not call Redis.
	lim.openUntil.Store(1)
	allow(t, lim, "k", PerMinute(10), Limit{})
	allow(t, lim, "k", PerMinute(10), Limit{})
	if f.calls != 2 {
		t.Fatalf("Redis called %d times, want 2 (one probe)", f.calls)
	}
	// A successful probe closes the breaker.
	f.err = nil
	f.reply = []any{int64(1), int64(9), int64(6_000_000), int64(0), int64(0), int64(0)}
	lim.openUntil.Store(1)
	if d := allow(t, lim, "k", PerMinute(10), Limit{}); d.Source != SourceRedis {
		t.Fatalf("probe: Source = %q", d.Source)
	}
	if d := allow(t, lim, "k", PerMinute(10), Limit{}); d.Source != SourceRedis {
		t.Fatalf("after the probe: Source = %q", d.Source)
	}
	if s := lim.Stats(); s.Fallbacks != 1 || s.Recoveries != 1 || s.RedisErrors != 2 {
		t.Errorf("Stats = %+v", s)
	}
}
