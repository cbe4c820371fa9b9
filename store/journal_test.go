package store_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/spool"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// THREATS 58: what Record returned for is on disk. The journal of a writer
// that never stored its records (as at a kill -9: the disk as it is, the
// process gone) is replayed by the next writer on that directory: every
// record once.
func TestWriterJournalReplaysAfterCrash(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	orgs := newOrgs(t, owner, 2)
	run := "jr" + uuid.NewString()[:8]
	dirA, dirB := t.TempDir(), t.TempDir()

	// A is never run: its records stay in its queue and its journal.
	a, err := store.NewWriter(st, store.WriterOptions{SpoolDir: dirA, Fsync: spool.SyncNever})
	if err != nil {
		t.Fatal(err)
	}
	const n = 500
	for i := range n {
		a.Record(rec(orgs[i%2], run, i))
	}
	if s := a.Stats(); s.JournalBytes == 0 || s.SpoolBytes != 0 {
		t.Fatalf("after %d records: journal %d bytes, spool %d bytes", n, s.JournalBytes, s.SpoolBytes)
	}
	// The disk as a crash would leave it.
	if err := os.MkdirAll(filepath.Join(dirB, "journal"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range segFiles(t, filepath.Join(dirA, "journal")) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dirB, "journal", filepath.Base(f)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	b := startWriter(t, st, store.WriterOptions{SpoolDir: dirB, FlushInterval: 10 * time.Millisecond})
	waitFor(t, 30*time.Second, "the journal's records", func() bool { return total(countByOrg(t, owner, orgs, run)) == n })
	if err := b.stop(t); err != nil {
		t.Fatal(err)
	}
	if s := b.Stats(); s.Replayed != n {
		t.Errorf("replayed %d records, want %d", s.Replayed, n)
	}
	if m := segFiles(t, filepath.Join(dirB, "journal")); len(m) != 0 {
		t.Errorf("journal segments left after a clean stop: %v", m)
	}
	// A, closed now, stores its queue too: the same rows, no second copy.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	got := countByOrg(t, owner, orgs, run)
	if got[orgs[0]] != n/2 || got[orgs[1]] != n/2 {
		t.Errorf("rows per organization %v, want %d each", got, n/2)
	}
}

// The journal does not grow: segments whose records are stored are
// deleted while the writer runs, and a clean stop leaves none, so the next
// start replays nothing.
func TestWriterJournalShrinks(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	orgs := newOrgs(t, owner, 3)
	run := "js" + uuid.NewString()[:8]
	dir := t.TempDir()
	w := startWriter(t, st, store.WriterOptions{SpoolDir: dir, Fsync: spool.SyncNever, FlushInterval: 20 * time.Millisecond})
	const n = 12000 // about 14 MiB: several 4 MiB journal segments
	pad := strings.Repeat("x", 1000)
	for i := range n {
		r := rec(orgs[i%3], run, i)
		r.Prompt += pad
		w.Record(r)
	}
	waitFor(t, 60*time.Second, "the records to be written", func() bool { return w.Stats().Written == n })
	// The spool unlinks a segment's file before it subtracts its size, so
	// the two are awaited together.
	waitFor(t, 10*time.Second, "stored journal segments to go, files and bytes", func() bool {
		return len(segFiles(t, filepath.Join(dir, "journal"))) <= 1 && w.Stats().JournalBytes <= 4<<20
	})
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
	if m := segFiles(t, filepath.Join(dir, "journal")); len(m) != 0 {
		t.Errorf("journal segments left after a clean stop: %v", m)
	}
	again := startWriter(t, st, store.WriterOptions{SpoolDir: dir})
	if s := again.Stats(); s.Replaying || s.SpoolBytes != 0 {
		t.Errorf("a clean stop left records to replay: %+v", s)
	}
	if got := total(countByOrg(t, owner, orgs, run)); got != n {
		t.Errorf("%d rows, want %d", got, n)
	}
}

// A spool frame whose CRC is right but whose payload is no record (another
// version's bug, a disk that returns wrong bytes with the right checksum)
// is a dead letter; the frames around it are stored, and the spool empties.
func TestWriterReplaysAroundUndecodableFrame(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	orgs := newOrgs(t, owner, 1)
	run := "ud" + uuid.NewString()[:8]
	dir := t.TempDir()
	sp, err := spool.Open(dir, spool.Options{Sync: spool.SyncNever})
	if err != nil {
		t.Fatal(err)
	}
	a, b := rec(orgs[0], run, 1), rec(orgs[0], run, 2)
	if err := sp.Append(store.AppendLogRecord(nil, &a), []byte{2, 0xff, 0xff, 0xff}, store.AppendLogRecord(nil, &b)); err != nil {
		t.Fatal(err)
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	w := startWriter(t, st, store.WriterOptions{SpoolDir: dir, Log: zap.NewNop()})
	waitFor(t, 30*time.Second, "the spool to be replayed", func() bool {
		s := w.Stats()
		return !s.Replaying && s.SpoolBytes == 0
	})
	if got := countByOrg(t, owner, orgs, run); got[orgs[0]] != 2 {
		t.Errorf("%d rows, want the 2 records around the bad frame", got[orgs[0]])
	}
	if s := w.Stats(); s.DeadLetters != 1 || s.Replayed != 2 {
		t.Errorf("dead letters %d, replayed %d; want 1 and 2", s.DeadLetters, s.Replayed)
	}
}

// BenchmarkRecord is what Record costs the request path: a queue send
// without a spool, plus the journal append (grouped with concurrent
// callers) with one, under each fsync policy. The writer runs meanwhile,
// as in the gateway. Compare the sub-benchmarks of one run.
func BenchmarkRecord(b *testing.B) {
	st := storetest.Open(b, store.Options{MaxConns: 10})
	owner := storetest.OwnerPool(b)
	orgs := newOrgs(b, owner, 10)
	for _, c := range []struct {
		name  string
		spool bool
		sync  spool.SyncPolicy
	}{
		{"memory", false, 0},
		{"journal/never", true, spool.SyncNever},
		{"journal/interval", true, spool.SyncInterval},
		{"journal/batch", true, spool.SyncBatch},
	} {
		for _, par := range []bool{false, true} {
			name := c.name + "/serial"
			if par {
				name = c.name + "/parallel"
			}
			b.Run(name, func(b *testing.B) {
				opts := store.WriterOptions{Fsync: c.sync, Log: zap.NewNop()}
				if c.spool {
					opts.SpoolDir = b.TempDir()
				}
				w := startWriter(b, st, opts)
				run := "br" + uuid.NewString()[:8]
				tmpl := rec(orgs[0], run, 0)
				tmpl.Prompt = `{"messages":[{"role":"user","content":"` + strings.Repeat("lorem ipsum ", 40) + `"}]}`
				b.ReportAllocs()
				b.ResetTimer()
				if !par {
					for i := range b.N {
						r := tmpl
						r.ID, r.OrgID = uuid.Nil, orgs[i%len(orgs)]
						w.Record(r)
					}
					return
				}
				b.SetParallelism(25) // 50 concurrent requests on 2 cores
				b.RunParallel(func(pb *testing.PB) {
					i := 0
					for pb.Next() {
						r := tmpl
						r.ID, r.OrgID = uuid.Nil, orgs[i%len(orgs)]
						w.Record(r)
						i++
					}
				})
			})
		}
	}
}
