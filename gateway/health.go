package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one dependency probe of the readiness report.
type Check struct {
	Name  string                          // e.g. "postgres", "redis", "log"
	Probe func(ctx context.Context) error // nil error: up
}

// Health tracks the dependencies and the draining state behind /readyz.
// Probes run in Run's goroutine every interval, never on a request; Ready
// reads the last results. It is safe for concurrent use.
type Health struct {
	checks   []Check
	policy   func(up map[string]bool) bool
	interval time.Duration
	draining atomic.Bool
	mu       sync.RWMutex
	up       map[string]bool
	gauge    *prometheus.GaugeVec
	reports  atomic.Pointer[func() map[string]string] // nil: none (Report)
}

// NewHealth builds a Health whose readiness is policy(up) while not
// draining. Until the first round of probes, nothing is up.
func NewHealth(reg prometheus.Registerer, policy func(up map[string]bool) bool, checks ...Check) *Health {
	h := &Health{checks: checks, policy: policy, interval: 2 * time.Second, up: map[string]bool{},
		gauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "bulkhead_dependency_up", Help: "1 while a dependency answers its probe."}, []string{"dependency"})}
	reg.MustRegister(h.gauge)
	return h
}

// Run probes every interval until ctx ends; it returns nil then.
func (h *Health) Run(ctx context.Context) error {
	t := time.NewTicker(h.interval)
	defer t.Stop()
	for {
		h.probe(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (h *Health) probe(ctx context.Context) {
	up := make(map[string]bool, len(h.checks))
	for _, c := range h.checks {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		up[c.Name] = c.Probe(pctx) == nil
		cancel()
		v := 0.0
		if up[c.Name] {
			v = 1
		}
		h.gauge.WithLabelValues(c.Name).Set(v)
	}
	h.mu.Lock()
	h.up = up
	h.mu.Unlock()
}

// Report adds states to /readyz's body that do not decide readiness, such
// as the upstreams' circuits (Server.UpstreamStates); f is called on every
// /readyz and must be cheap.
func (h *Health) Report(f func() map[string]string) { h.reports.Store(&f) }

// SetDraining makes the gateway report not ready from now on (SIGTERM).
func (h *Health) SetDraining() { h.draining.Store(true) }

// Ready reports readiness and the state of every dependency.
func (h *Health) Ready() (bool, map[string]string) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	states := make(map[string]string, len(h.up)+1)
	for name, ok := range h.up {
		states[name] = map[bool]string{true: "up", false: "down"}[ok]
	}
	if f := h.reports.Load(); f != nil {
		for name, state := range (*f)() {
			states[name] = state
		}
	}
	if h.draining.Load() {
		states["gateway"] = "draining"
		return false, states
	}
	return h.policy(h.up), states
}

// AdminHandler serves the admin listener: /healthz (the process is alive),
// /readyz (200 while ready, else 503; the body names what is degraded),
// /metrics (Prometheus) and /debug/pprof/. Keep it off public networks.
func AdminHandler(h *Health, g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"ok"}`)) //nolint:errcheck // the client may be gone
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ready, states := h.Ready()
		w.Header().Set("Content-Type", "application/json")
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		json.NewEncoder(w).Encode(struct { //nolint:errcheck // the client may be gone
			Ready        bool              `json:"ready"`
			Dependencies map[string]string `json:"dependencies"`
		}{ready, states})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
