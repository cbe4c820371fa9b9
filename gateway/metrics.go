package gateway

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/gateway/openai"
)

// metrics are the gateway's Prometheus series. Every label set is bounded
// and none is the caller's choice: endpoint and status are fixed lists, and
// a model gets its own label only when the configuration or the default
// upstream names it (Server.modelLabel), so a caller inventing model names
// can neither grow the series nor crowd out the real models. Per-tenant
// series exist only when enabled in config.
type metrics struct {
	requests    *prometheus.CounterVec   // endpoint, model, status
	tenantReqs  *prometheus.CounterVec   // org; nil unless enabled
	latency     *prometheus.HistogramVec // endpoint: whole request, stream included
	upstream    *prometheus.HistogramVec // endpoint: until the upstream's response headers
	overhead    prometheus.Histogram     // the gateway's own time before forwarding
	ttfb        prometheus.Histogram     // streams: until the first event reaches the caller
	tokens      *prometheus.CounterVec   // kind: prompt, completion
	rateLimited *prometheus.CounterVec   // limit: requests, tokens
	// where: response, stream, error (see credentialWithheld)
	credentialBlocked *prometheus.CounterVec
	discrepant        *prometheus.CounterVec // endpoint: upstream total_tokens that did not add up
	models            boundedLabels          // the upstream-listed models given their own label
	modelLabel        func(string) string    // model name -> label value
	cost              *costMetrics           // cost.go
}

// maxModelLabels caps the distinct label values of upstream-listed models.
const maxModelLabels = 64

var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}

func newMetrics(reg prometheus.Registerer, perTenant bool, modelLabel func(string) string) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulkhead_requests_total", Help: "Proxied requests by endpoint, model and status.",
		}, []string{"endpoint", "model", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "bulkhead_request_duration_seconds", Help: "Whole request time, streams included.", Buckets: latencyBuckets,
		}, []string{"endpoint"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "bulkhead_upstream_duration_seconds", Help: "Time until the upstream's response headers.", Buckets: latencyBuckets,
		}, []string{"endpoint"}),
		overhead: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "bulkhead_gateway_overhead_seconds", Help: "The gateway's own time before forwarding (auth, parse, route, limits).",
			Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .05, .1},
		}),
		ttfb: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "bulkhead_stream_first_byte_seconds", Help: "Streams: time until the first event is sent to the caller.", Buckets: latencyBuckets,
		}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulkhead_tokens_total", Help: "Tokens by kind (prompt, completion).",
		}, []string{"kind"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulkhead_rate_limited_total", Help: "Requests refused by a per-key limit.",
		}, []string{"limit"}),
		credentialBlocked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulkhead_provider_credential_blocked_total", Help: "Provider credentials an upstream sent and the gateway withheld from the caller, by where (response, stream, error).",
		}, []string{"where"}),
		discrepant: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulkhead_usage_discrepancies_total",
			Help: "Upstream answers whose total_tokens was not prompt plus completion tokens (the sum was recorded and charged).",
		}, []string{"endpoint"}),
		models:     boundedLabels{max: maxModelLabels, seen: map[string]struct{}{}},
		modelLabel: modelLabel,
	}
	reg.MustRegister(m.requests, m.latency, m.upstream, m.overhead, m.ttfb, m.tokens, m.rateLimited, m.credentialBlocked, m.discrepant)
	m.cost = newCostMetrics(reg)
	if perTenant {
		m.tenantReqs = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulkhead_tenant_requests_total", Help: "Proxied requests by organization (enabled by BULKHEAD_METRICS_PER_TENANT).",
		}, []string{"org"})
		reg.MustRegister(m.tenantReqs)
	}
	return m
}

// observe counts one finished request.
func (m *metrics) observe(x *exchange, status int, latency time.Duration, promptTok, completionTok int) {
	ep := x.ep.Path()
	m.requests.WithLabelValues(ep, m.modelLabel(x.model), statusLabel(status)).Inc()
	m.latency.WithLabelValues(ep).Observe(latency.Seconds())
	if promptTok > 0 {
		m.tokens.WithLabelValues("prompt").Add(float64(promptTok))
	}
	if completionTok > 0 {
		m.tokens.WithLabelValues("completion").Add(float64(completionTok))
	}
	if m.tenantReqs != nil {
		m.tenantReqs.WithLabelValues(x.principal.OrgText).Inc()
	}
}

var statusLabels = func() (t [600]string) {
	for i := range t {
		t[i] = strconv.Itoa(i)
	}
	return t
}()

func statusLabel(code int) string {
	if code >= 0 && code < len(statusLabels) {
		return statusLabels[code]
	}
	return "other"
}

// boundedLabels admits the first max distinct values and maps the rest to
// "other". It is safe for concurrent use.
type boundedLabels struct {
	mu   sync.RWMutex
	max  int
	seen map[string]struct{}
}

func (b *boundedLabels) label(v string) string {
	if v == "" {
		return "none"
	}
	b.mu.RLock()
	_, ok := b.seen[v]
	full := len(b.seen) >= b.max
	b.mu.RUnlock()
	if ok {
		return v
	}
	if full {
		return "other"
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.seen) >= b.max {
		return "other"
	}
	b.seen[v] = struct{}{}
	return v
}

// flagDiscrepancy counts and logs an upstream usage whose total_tokens did
// not add up; the record and the charge use the sum (openai.Usage).
func (s *Server) flagDiscrepancy(x *exchange, u openai.Usage) {
	if !u.Discrepant {
		return
	}
	s.metrics.discrepant.WithLabelValues(x.ep.Path()).Inc()
	s.log.Warn("upstream usage does not add up; recorded and charged prompt + completion tokens",
		zap.String("request_id", x.reqID), zap.String("endpoint", x.ep.Path()), zap.String("model", x.model),
		zap.Int("prompt_tokens", u.PromptTokens), zap.Int("completion_tokens", u.CompletionTokens),
		zap.Int("reported_total_tokens", u.ReportedTotal))
}
