package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// The bulkhead_log_* series follow the writer: records waiting in the
// queue and the journal, then committed.
func TestWriterCollector(t *testing.T) {
	ctx := context.Background()
	org, err := storetest.Admin(t).CreateOrg(ctx, "collector")
	if err != nil {
		t.Fatal(err)
	}
	w, err := store.NewWriter(storetest.Open(t, store.Options{}), store.WriterOptions{SpoolDir: t.TempDir(), FlushInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if mfs, err := pedantic(t, w).Gather(); err != nil || len(mfs) != 8 {
		t.Fatalf("%d series (%v), want the 8 bulkhead_log_* ones", len(mfs), err)
	}
	value := func(name string) float64 {
		t.Helper()
		mfs, err := pedantic(t, w).Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name {
				m := mf.GetMetric()[0]
				return m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
		t.Fatalf("no %s", name)
		return 0
	}

	const n = 3
	run := fmt.Sprintf("collector-%d", time.Now().UnixNano())
	for i := range n {
		now := time.Now()
		w.Record(store.LogRecord{ID: store.NewRowID(now), OrgID: org.ID, RequestID: fmt.Sprintf("%s-%d", run, i),
			Endpoint: "/v1/chat/completions", Model: "gpt-4o-mini", UsageSource: "upstream", Status: 200, CreatedAt: now})
	}
	if q := value("bulkhead_log_queue_depth"); q != n {
		t.Errorf("queue depth %v before Run, want %d", q, n)
	}
	if j := value("bulkhead_log_journal_bytes"); j <= 0 {
		t.Errorf("journal bytes %v with %d records answered and not stored, want more than 0", j, n)
	}

	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(rctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for value("bulkhead_log_written_total") != n {
		if time.Now().After(deadline) {
			t.Fatalf("written_total %v after 10s, want %d", value("bulkhead_log_written_total"), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]float64{"bulkhead_log_queue_depth": 0, "bulkhead_log_lost_total": 0, "bulkhead_log_dead_letters_total": 0} {
		if v := value(name); v != want {
			t.Errorf("%s = %v after the flush, want %v", name, v, want)
		}
	}
}

// pedantic registers c alone in a registry that checks every metric
// against its description.
func pedantic(t *testing.T, c prometheus.Collector) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	return reg
}
