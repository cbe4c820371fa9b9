package auth

import "github.com/prometheus/client_golang/prometheus"

// authMetrics are the look-up counters (the bulkhead_auth_* series), each
// read from Stats.
var authMetrics = []struct {
	desc *prometheus.Desc
	get  func(*Stats) uint64
}{
	{counterDesc("l1_hits", "API keys answered by the in-process cache."), func(s *Stats) uint64 { return s.L1Hits }},
	{counterDesc("l1_negative_hits", "Unknown keys answered by the in-process negative cache."), func(s *Stats) uint64 { return s.L1Negative }},
	{counterDesc("l2_hits", "API keys answered by Redis."), func(s *Stats) uint64 { return s.L2Hits }},
	{counterDesc("l2_errors", "Redis look-ups that failed."), func(s *Stats) uint64 { return s.L2Errors }},
	{counterDesc("l3_lookups", "Look-ups that reached PostgreSQL."), func(s *Stats) uint64 { return s.L3Lookups }},
	{counterDesc("l3_queries", "PostgreSQL transactions that looked up keys; concurrent look-ups share one."), func(s *Stats) uint64 { return s.L3Queries }},
	{counterDesc("l3_errors", "PostgreSQL look-ups that failed."), func(s *Stats) uint64 { return s.L3Errors }},
	{counterDesc("malformed", "Credentials refused without any look-up."), func(s *Stats) uint64 { return s.Malformed }},
	{counterDesc("invalidations", "Invalidation events applied."), func(s *Stats) uint64 { return s.Invalidated }},
	{counterDesc("failures", "API-key look-ups PostgreSQL refused (unknown, revoked or expired), charged to the failure budgets."),
		func(s *Stats) uint64 { return s.Failures }},
}

// throttledDesc counts throttled look-ups by the budget that was spent
// (scope: ScopeAddress or ScopeOrganization).
var throttledDesc = prometheus.NewDesc("bulkhead_auth_throttled_total",
	"API-key look-ups refused with 429, before PostgreSQL, because a failure budget was spent.", []string{"scope"}, nil)

func counterDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc("bulkhead_auth_"+name+"_total", help, nil, nil)
}

var _ prometheus.Collector = (*Authenticator)(nil)

// Describe makes the Authenticator a prometheus.Collector of where its
// look-ups were answered and refused (the bulkhead_auth_* series).
func (a *Authenticator) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range authMetrics {
		ch <- m.desc
	}
	ch <- throttledDesc
}

// Collect reads Stats once per scrape. It is safe for concurrent use.
func (a *Authenticator) Collect(ch chan<- prometheus.Metric) {
	s := a.Stats()
	for _, m := range authMetrics {
		ch <- prometheus.MustNewConstMetric(m.desc, prometheus.CounterValue, float64(m.get(&s)))
	}
	ch <- prometheus.MustNewConstMetric(throttledDesc, prometheus.CounterValue, float64(s.ThrottledAddress), ScopeAddress)
	ch <- prometheus.MustNewConstMetric(throttledDesc, prometheus.CounterValue, float64(s.ThrottledOrg), ScopeOrganization)
}
