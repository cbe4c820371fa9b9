package storetest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisServer is a redis-server process of the test's own (a cluster
// node, a replica, a Sentinel), on a free loopback port, in a directory
// under t.TempDir(). It is killed when the test ends. The shared Redis of
// Redis (BULKHEAD_TEST_REDIS_URL) is never touched by these helpers.
type RedisServer struct {
	// Addr is the server's host:port on 127.0.0.1.
	Addr string
	// Dir holds its configuration, data and log (redis.log).
	Dir string

	cmd    *exec.Cmd
	exited chan struct{}
	mu     sync.Mutex
	killed bool
}

// StartRedisServer starts a standalone Redis of the test's own, killed
// when the test ends: a baseline beside a cluster's nodes, configured as
// they are.
func StartRedisServer(t testing.TB) *RedisServer {
	t.Helper()
	return startRedis(t, "standalone", false, nil)
}

// URL is the server as BULKHEAD_REDIS_URL names it in single mode.
func (s *RedisServer) URL() string { return "redis://" + s.Addr + "/0" }

// redisBinaries are what the local clusters need: deploy/dev/services.sh
// installs both (Debian's redis-server and redis-tools).
func redisBinaries(t testing.TB) (server, cli string) {
	t.Helper()
	server, err := exec.LookPath("redis-server")
	if err != nil {
		Unavailable(t, "redis-server (to start a local Redis Cluster or Sentinel)", err)
	}
	cli, err = exec.LookPath("redis-cli")
	if err != nil {
		Unavailable(t, "redis-cli (to create a local Redis Cluster)", err)
	}
	return server, cli
}

// freePort returns a loopback port that nothing listened on a moment ago.
// Another process may take it before redis-server binds it; startRedis
// then tries another.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startRedis starts redis-server with the configuration lines conf (one
// directive each, without port, bind, dir or logfile, which it sets) and
// waits until it answers PING. extraPorts names directives that need a
// free port of their own (cluster-port); their values are chosen here.
// sentinel runs it as a Sentinel, whose configuration must be a file it
// can rewrite.
func startRedis(t testing.TB, name string, sentinel bool, conf []string, extraPorts ...string) *RedisServer {
	t.Helper()
	bin, _ := redisBinaries(t)
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		s, err := tryStartRedis(t, bin, name, sentinel, conf, extraPorts)
		if err == nil {
			return s
		}
		lastErr = err
	}
	t.Fatalf("starting redis-server %s: %v", name, lastErr)
	return nil
}

func tryStartRedis(t testing.TB, bin, name string, sentinel bool, conf, extraPorts []string) (*RedisServer, error) {
	dir := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	port := freePort(t)
	lines := []string{
		"port " + strconv.Itoa(port),
		"bind 127.0.0.1",
		"dir " + dir,
		"logfile " + filepath.Join(dir, "redis.log"),
		"daemonize no",
	}
	if !sentinel {
		// No snapshots, and a replica's first sync at once rather than
		// after Redis's default 5s wait for more replicas.
		lines = append(lines, `save ""`, "appendonly no", "repl-diskless-sync-delay 0")
	}
	for _, d := range extraPorts {
		lines = append(lines, d+" "+strconv.Itoa(freePort(t)))
	}
	lines = append(lines, conf...)
	confPath := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(confPath, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return nil, err
	}
	args := []string{confPath}
	if sentinel {
		args = append(args, "--sentinel")
	}
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = sysProcAttr(nil)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &RedisServer{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Dir: dir, cmd: cmd, exited: make(chan struct{})}
	go func() {
		cmd.Wait() //nolint:errcheck // a killed server exits with a signal; Kill and the readiness wait read exited
		close(s.exited)
	}()
	t.Cleanup(s.Kill)

	rdb := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer rdb.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			return s, nil
		}
		select {
		case <-s.exited: // most likely the port was taken meanwhile
			return nil, fmt.Errorf("exited at start: %s", s.logTail())
		default:
		}
		if time.Now().After(deadline) {
			s.Kill()
			return nil, fmt.Errorf("no answer within 10s (%v): %s", err, s.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill stops the server at once (SIGKILL, as a crash would) and waits
// for it to exit. It may be called more than once.
func (s *RedisServer) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.killed {
		s.killed = true
		if err := s.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			panic(fmt.Sprintf("storetest: killing redis-server %s: %v", s.Addr, err))
		}
	}
	<-s.exited
}

// Alive reports whether Kill has not been called.
func (s *RedisServer) Alive() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.killed
}

// logTail is the end of the server's log, for error messages.
func (s *RedisServer) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// client returns a plain client of this one server, for setting up and
// observing it; the caller closes it. It speaks RESP2, whose replies to
// SENTINEL and ROLE are flat arrays.
func (s *RedisServer) client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: s.Addr, Protocol: 2, MaxRetries: -1, DialTimeout: time.Second,
		ReadTimeout: 2 * time.Second})
}
