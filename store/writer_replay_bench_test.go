package store_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
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

// BenchmarkWriterSeeded is BenchmarkWriterTenants and
// BenchmarkWriterReplay on the organizations of a log that `bulkhead-bench
// seed -prefix PREFIX` made (PREFIX from BULKHEAD_BENCH_SEED_PREFIX): the
// writer and the replay at the seeded log's size (issue 17: 50M rows,
// 1,000 and 10,000 interleaved tenants). It neither creates nor deletes
// organizations, nor vacuums (newOrgs would vacuum the whole log after
// each run); its rows stay with the seeded organizations, which `seed
// -drop` deletes.
func BenchmarkWriterSeeded(b *testing.B) {
	prefix := os.Getenv("BULKHEAD_BENCH_SEED_PREFIX")
	if prefix == "" {
		b.Skip("BULKHEAD_BENCH_SEED_PREFIX unset: no seeded log to write to (bulkhead-bench seed)")
	}
	owner := storetest.OwnerPool(b)
	for _, n := range []int{1000, 10000} {
		rows, err := owner.Query(context.Background(), `SELECT id FROM organizations WHERE name LIKE $1 || '-%' ORDER BY id LIMIT $2`, prefix, n)
		if err != nil {
			b.Fatal(err)
		}
		orgs, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		if err != nil {
			b.Fatal(err)
		}
		if len(orgs) < n {
			b.Fatalf("%d organizations named %s-*, want %d", len(orgs), prefix, n)
		}
		b.Run("tenants="+strconv.Itoa(n)+"/writer", func(b *testing.B) {
			benchWriterOrgs(b, benchStore(b, "prepared", 10), store.WriterOptions{}, orgs)
		})
		b.Run("tenants="+strconv.Itoa(n)+"/replay", func(b *testing.B) {
			benchReplay(b, benchStore(b, "prepared", 10), orgs)
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
