package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"

	"github.com/bulkheadhq/bulkhead/config"
)

// upstreamMetrics are one upstream's series, resolved once so that an
// attempt costs no label look-up.
type upstreamMetrics struct {
	ok, retried, failed, skipped prometheus.Counter
}

// upstreamSeries are the per-upstream series: attempts by result, and the
// circuit's state. The upstream label is a configured name.
type upstreamSeries struct {
	attempts *prometheus.CounterVec // upstream, result: ok, retried, failed, skipped
	state    *prometheus.GaugeVec   // upstream: 0 closed, 1 half-open, 2 open
}

func newUpstreamSeries(reg prometheus.Registerer) *upstreamSeries {
	u := &upstreamSeries{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulkhead_upstream_attempts_total",
			Help: "Upstream attempts by upstream and result: ok (answered), retried (failed; the request went on), failed (failed; the request's last attempt), skipped (circuit open: not attempted).",
		}, []string{"upstream", "result"}),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bulkhead_upstream_circuit_state", Help: "Each upstream's circuit breaker: 0 closed, 1 half-open (probing), 2 open (skipped).",
		}, []string{"upstream"}),
	}
	reg.MustRegister(u.attempts, u.state)
	return u
}

// instrument gives every upstream of r its series and its breaker.
func (r *router) instrument(cfg config.Config, series *upstreamSeries) {
	for _, up := range r.all {
		up.metrics = upstreamMetrics{
			ok:      series.attempts.WithLabelValues(up.name, "ok"),
			retried: series.attempts.WithLabelValues(up.name, "retried"),
			failed:  series.attempts.WithLabelValues(up.name, "failed"),
			skipped: series.attempts.WithLabelValues(up.name, "skipped"),
		}
		series.state.WithLabelValues(up.name).Set(0)
		up.breaker = newBreaker(up.name, cfg, func(name string, to gobreaker.State) {
			series.state.WithLabelValues(name).Set(float64(to))
		})
	}
}

// UpstreamStates reports each upstream's circuit for /readyz
// (Health.Report): "upstream:NAME" → closed, half-open or open. An open
// circuit does not make the gateway unready: every replica sees the same
// provider, and the route's fallbacks still serve.
func (s *Server) UpstreamStates() map[string]string {
	out := make(map[string]string, len(s.router.all))
	for _, up := range s.router.all {
		out["upstream:"+up.name] = up.breaker.state().String()
	}
	return out
}
