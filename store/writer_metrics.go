package store

import "github.com/prometheus/client_golang/prometheus"

// writerMetrics are the request log's series: the bulkhead_log_* gauges of
// what waits now and counters of where records went (see WriterStats).
var writerMetrics = []struct {
	desc *prometheus.Desc
	kind prometheus.ValueType
	get  func(*WriterStats) float64
}{
	{prometheus.NewDesc("bulkhead_log_queue_depth", "Records waiting in memory.", nil, nil),
		prometheus.GaugeValue, func(s *WriterStats) float64 { return float64(s.QueueDepth) }},
	{prometheus.NewDesc("bulkhead_log_spool_bytes", "Bytes in the disk spool.", nil, nil),
		prometheus.GaugeValue, func(s *WriterStats) float64 { return float64(s.SpoolBytes) }},
	{prometheus.NewDesc("bulkhead_log_journal_bytes", "Bytes in the request log's journal (answered requests not yet in PostgreSQL or the spool).", nil, nil),
		prometheus.GaugeValue, func(s *WriterStats) float64 { return float64(s.JournalBytes) }},
	{prometheus.NewDesc("bulkhead_log_written_total", "Records committed from the queue.", nil, nil),
		prometheus.CounterValue, func(s *WriterStats) float64 { return float64(s.Written) }},
	{prometheus.NewDesc("bulkhead_log_spooled_total", "Records appended to the disk spool.", nil, nil),
		prometheus.CounterValue, func(s *WriterStats) float64 { return float64(s.Spooled) }},
	{prometheus.NewDesc("bulkhead_log_replayed_total", "Records committed from the spool.", nil, nil),
		prometheus.CounterValue, func(s *WriterStats) float64 { return float64(s.Replayed) }},
	{prometheus.NewDesc("bulkhead_log_dead_letters_total", "Records PostgreSQL refused row by row (logged by request id).", nil, nil),
		prometheus.CounterValue, func(s *WriterStats) float64 { return float64(s.DeadLetters) }},
	{prometheus.NewDesc("bulkhead_log_lost_total", "Records neither PostgreSQL nor the spool took at shutdown.", nil, nil),
		prometheus.CounterValue, func(s *WriterStats) float64 { return float64(s.Lost) }},
}

var _ prometheus.Collector = (*Writer)(nil)

// Describe makes the Writer a prometheus.Collector of its queue, spool and
// journal and of where its records went (the bulkhead_log_* series).
func (w *Writer) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range writerMetrics {
		ch <- m.desc
	}
}

// Collect reads Stats once per scrape. It is safe for concurrent use.
func (w *Writer) Collect(ch chan<- prometheus.Metric) {
	s := w.Stats()
	for _, m := range writerMetrics {
		ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.get(&s))
	}
}
