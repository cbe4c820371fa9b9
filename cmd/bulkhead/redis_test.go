package main

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// go-redis's own log lines (here: a failed dial whose error names the
// password) reach the process log redacted, not raw on stderr.
func TestRedisLogIsRedacted(t *testing.T) {
	core, obs := observer.New(zap.DebugLevel)
	routeRedisLog(zap.New(core))
	t.Cleanup(func() { routeRedisLog(zap.NewNop()) })
	const secret = "s3cret-pw"
	rdb := redis.NewClient(&redis.Options{Addr: "cache:6379", MaxRetries: -1, DialerRetries: 1,
		Dialer: func(context.Context, string, string) (net.Conn, error) {
			return nil, errors.New("dial redis://:" + secret + "@cache:6379: refused")
		}})
	defer rdb.Close()
	if err := rdb.Ping(context.Background()).Err(); err == nil {
		t.Fatal("ping through a failing dialer succeeded")
	}
	lines := obs.FilterLoggerName("redis").All()
	if len(lines) == 0 {
		t.Fatal("go-redis logged nothing through the process logger")
	}
	for _, e := range lines {
		if line := e.ContextMap()["line"].(string); strings.Contains(line, secret) {
			t.Errorf("redis log line carries the error's text: %q", line)
		}
	}
}
