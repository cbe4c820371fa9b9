package gateway

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them: every
// goroutine a test, a harness or a Server starts must have ended by then.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, leakIgnores...)
}

// leakIgnores are the libraries' housekeeping goroutines, each of which
// ends by itself but outlives the Close or Shutdown of its owner, and
// which no API of its owner waits for.
var leakIgnores = []goleak.Option{
	// fasthttp, one per process, started by the first server to write a
	// Date header; by design it never stops.
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
	// fasthttp, one per Server: it sweeps idle workers and looks at its
	// stop channel only between sleeps of MaxIdleWorkerDuration (10s by
	// default), so it ends up to 10s after Serve returns, and until then
	// keeps the Server, and so the gateway's Server, reachable.
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
	// fasthttp, one per HostClient with connections: it closes connections
	// idle for MaxIdleConnDuration and ends once the client has none,
	// checking only between sleeps of that duration (30s for an upstream,
	// 10s for test clients), so it ends that long after
	// CloseIdleConnections.
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
	// otter, one per cache with expiry (an auth.Authenticator has four):
	// it holds its cache only weakly and ends at its first tick (1s) after
	// the collector frees the cache, which the sweeper above keeps
	// reachable for up to 10s through the gateway's Server.
	goleak.IgnoreAnyFunction("github.com/maypok86/otter/v2.periodicCleanUp[...]"),
}
