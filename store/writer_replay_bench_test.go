package store_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/spool"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// BenchmarkWriterReplay measures the rows per second of a spool replay
// after an outage (issue 17: at least as fast as the writer's own
// BenchmarkWriterTenants): b.N records of ~1 KB, of 1,000 or 10,000
// interleaved tenants, are put in a spool as the writer spools them
// during an outage (whole batches, one Append each); the timer then runs
// from a new writer's start on that spool until the spool is empty, with
// the default options.
func BenchmarkWriterReplay(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run("tenants="+strconv.Itoa(n), func(b *testing.B) {
			st := benchStore(b, "prepared", 10)
			benchReplay(b, st, newOrgs(b, storetest.OwnerPool(b), n))
		})
	}
}

func benchReplay(b *testing.B, st *store.Store, orgs []uuid.UUID) {
	dir := b.TempDir()
	sp, err := spool.Open(dir, spool.Options{Sync: spool.SyncNever})
	if err != nil {
		b.Fatal(err)
	}
	run := "rp" + uuid.NewString()[:8]
	tmpl := rec(orgs[0], run, 0)
	tmpl.Prompt = `{"messages":[{"role":"user","content":"` + strings.Repeat("lorem ipsum ", 80) + `"}]}` // ~1 KB
	var batch [][]byte
	for i := range b.N {
		r := tmpl
		r.OrgID = orgs[i%len(orgs)]
		r.RequestID = r.OrgID.String() + "/" + run + "/" + strconv.Itoa(i)
		r.CreatedAt = time.Now()
		r.ID = store.NewRowID(r.CreatedAt)
		batch = append(batch, store.AppendLogRecord(nil, &r))
		if len(batch) == store.DefaultBatchSize || i == b.N-1 {
			if err := sp.Append(batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if err := sp.Close(); err != nil {
		b.Fatal(err)
	}

	w, err := store.NewWriter(st, store.WriterOptions{SpoolDir: dir, Log: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	b.ReportAllocs()
	b.ResetTimer()
	go func() { errc <- w.Run(ctx) }()
	for s := w.Stats(); s.SpoolBytes > 0 || s.Replaying || s.Replayed+s.DeadLetters < int64(b.N); s = w.Stats() {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
	defer ccancel()
	if err := w.Close(cctx); err != nil {
		b.Fatal(err)
	}
	<-errc
	if s := w.Stats(); s.Replayed != int64(b.N) || s.Duplicates != 0 || s.DeadLetters != 0 {
		b.Fatalf("stats %+v after %d spooled records", s, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
