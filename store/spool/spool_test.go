package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func payload(i int) []byte {
	return []byte(fmt.Sprintf("payload-%05d-%s", i, bytes.Repeat([]byte{'x'}, i%50)))
}

func open(t *testing.T, dir string, opts Options) *Spool {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func replayAll(t *testing.T, s *Spool) [][]byte {
	t.Helper()
	var got [][]byte
	if err := s.Replay(func(p []byte) error { got = append(got, bytes.Clone(p)); return nil }); err != nil {
		t.Fatalf("Replay: %v", err)
	}
	return got
}

func segFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

func frameSize(p []byte) int64 { return headerSize + int64(len(p)) }

func TestAppendReplayOrderAndSize(t *testing.T) {
	for _, sync := range []SyncPolicy{SyncBatch, SyncNever} {
		t.Run(sync.String(), func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir, Options{Sync: sync})
			var want [][]byte
			var size int64
			for i := range 100 {
				batch := [][]byte{payload(3 * i), payload(3*i + 1), payload(3*i + 2)}
				if err := s.Append(batch...); err != nil {
					t.Fatal(err)
				}
				for _, p := range batch {
					want = append(want, p)
					size += frameSize(p)
				}
			}
			if s.Size() != size {
				t.Errorf("Size = %d, want %d", s.Size(), size)
			}
			if got := replayAll(t, s); !slices.EqualFunc(got, want, bytes.Equal) {
				t.Fatalf("replayed %d payloads, want %d in order", len(got), len(want))
			}
			// Replay deletes nothing; reopening finds the same.
			s.Close()
			s2 := open(t, dir, Options{Sync: sync})
			if s2.Size() != size {
				t.Errorf("Size after reopen = %d, want %d", s2.Size(), size)
			}
			if got := replayAll(t, s2); !slices.EqualFunc(got, want, bytes.Equal) {
				t.Fatalf("after reopen: replayed %d payloads, want %d in order", len(got), len(want))
			}
		})
	}
}

func TestAppendRejects(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	if err := s.Append([]byte("ok"), nil); !errors.Is(err, ErrEmptyPayload) {
		t.Errorf("empty payload: err = %v", err)
	}
	if s.Size() != 0 {
		t.Errorf("a rejected Append stored %d bytes", s.Size())
	}
	s.Close()
	if err := s.Append([]byte("late")); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: err = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestSegmentRollover(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentSize: 1000})
	var want [][]byte
	for i := range 50 {
		p := bytes.Repeat([]byte{byte('a' + i%26)}, 100) // 108-byte frames: 9 per segment
		want = append(want, p)
		if err := s.Append(p); err != nil {
			t.Fatal(err)
		}
	}
	files := segFiles(t, dir)
	if len(files) != 6 { // ceil(50/9)
		t.Fatalf("%d segments, want 6: %v", len(files), files)
	}
	for i, f := range files[:len(files)-1] {
		st, _ := os.Stat(f)
		if st.Size() != 9*108 {
			t.Errorf("segment %d: %d bytes, want %d", i, st.Size(), 9*108)
		}
		if base := filepath.Base(f); base != fmt.Sprintf("%020d.seg", i+1) {
			t.Errorf("segment %d named %s", i, base)
		}
	}
	// One Append never spans segments: a batch bigger than a segment gets
	// its own.
	big := slices.Repeat([][]byte{bytes.Repeat([]byte{'z'}, 300)}, 5)
	if err := s.Append(big...); err != nil {
		t.Fatal(err)
	}
	want = append(want, big...)
	if n := len(segFiles(t, dir)); n != 7 {
		t.Errorf("%d segments after an oversized Append, want 7", n)
	}
	if got := replayAll(t, s); !slices.EqualFunc(got, want, bytes.Equal) {
		t.Fatalf("replayed %d payloads, want %d in order", len(got), len(want))
	}
}

func TestDrainDeletesAcceptedSegments(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentSize: 500})
	want := appendPayloads(t, s, 40)
	nseg := len(segFiles(t, dir))
	if nseg < 3 {
		t.Fatalf("only %d segments; the test needs several", nseg)
	}

	// The callback fails on the third segment: the first two are gone, the
	// rest stay, and the next Drain hands the third out again.
	var got [][]byte
	var seqs []uint64
	calls := 0
	errStop := errors.New("stop")
	err := s.Drain(func(sg Segment) error {
		calls++
		if calls == 3 {
			return errStop
		}
		seqs = append(seqs, sg.Seq)
		for _, p := range sg.Payloads {
			got = append(got, bytes.Clone(p))
		}
		return nil
	})
	if !errors.Is(err, errStop) {
		t.Fatalf("Drain: %v", err)
	}
	if n := len(segFiles(t, dir)); n != nseg-2 {
		t.Errorf("%d segments after deleting two of %d", n, nseg)
	}
	var rest int64
	for _, f := range segFiles(t, dir) {
		st, _ := os.Stat(f)
		rest += st.Size()
	}
	if s.Size() != rest {
		t.Errorf("Size = %d, files hold %d", s.Size(), rest)
	}

	// Appends during a Drain go to a new segment, handed out next time.
	late := []byte("appended while draining")
	want = append(want, late)
	err = s.Drain(func(sg Segment) error {
		if sg.Seq <= seqs[len(seqs)-1] {
			t.Errorf("segment %d handed out again after it was accepted", sg.Seq)
		}
		if late != nil {
			if err := s.Append(late); err != nil {
				return err
			}
			late = nil
		}
		for _, p := range sg.Payloads {
			got = append(got, bytes.Clone(p))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Drain(func(sg Segment) error {
		for _, p := range sg.Payloads {
			got = append(got, bytes.Clone(p))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(got, want, bytes.Equal) {
		t.Fatalf("drained %d payloads, want %d in order", len(got), len(want))
	}
	if s.Size() != 0 || len(segFiles(t, dir)) != 0 {
		t.Errorf("after a full drain: Size = %d, files %v", s.Size(), segFiles(t, dir))
	}
}

// appendPayloads appends payload(0) to payload(n-1), one Append each, and
// returns them in order.
func appendPayloads(t *testing.T, s *Spool, n int) [][]byte {
	t.Helper()
	var out [][]byte
	for i := range n {
		p := payload(i)
		out = append(out, p)
		if err := s.Append(p); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// Drain reads the next segment while its callback takes the current one:
// a segment's payloads stay as they were until the callback returns, and
// every segment is handed out whole, in order.
func TestDrainReadsAheadIntoOtherMemory(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentSize: 500})
	want := appendPayloads(t, s, 60)
	if n := len(segFiles(t, dir)); n < 4 {
		t.Fatalf("only %d segments; the test needs several", n)
	}
	var got [][]byte
	err := s.Drain(func(sg Segment) error {
		before := make([][]byte, len(sg.Payloads))
		for i, p := range sg.Payloads {
			before[i] = bytes.Clone(p)
		}
		time.Sleep(20 * time.Millisecond) // the next segment is read meanwhile
		if !slices.EqualFunc(sg.Payloads, before, bytes.Equal) {
			t.Errorf("segment %d's payloads changed while its callback ran", sg.Seq)
		}
		got = append(got, before...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(got, want, bytes.Equal) {
		t.Fatalf("drained %d payloads, want %d in order", len(got), len(want))
	}
}

// TestRecoverTornTail simulates kill -9 (or power loss) in the middle of a
// write: the newest segment ends in a partial frame or garbage. Open cuts
// it off and every complete frame replays.
func TestRecoverTornTail(t *testing.T) {
	frame := func(p []byte) []byte {
		b := binary.LittleEndian.AppendUint32(nil, uint32(len(p)))
		b = binary.LittleEndian.AppendUint32(b, 0xdeadbeef)
		return append(b, p...)
	}
	full := func(p []byte) []byte {
		var f []byte
		f = binary.LittleEndian.AppendUint32(f, uint32(len(p)))
		f = binary.LittleEndian.AppendUint32(f, crcOf(p))
		return append(f, p...)
	}
	cases := []struct {
		name string
		tail []byte
	}{
		{"half a header", []byte{42, 0, 0}},
		{"header without payload", full(payload(999))[:headerSize]},
		{"payload cut short", full(payload(999))[:headerSize+5]},
		{"complete frame with a bad crc", frame(payload(999))},
		{"zeros from a lost page", make([]byte, 4096)},
		{"garbage", []byte("\xff\xff\xff\x7fnot a frame at all")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir, Options{SegmentSize: 600})
			var want [][]byte
			for i := range 20 {
				want = append(want, payload(i))
				if err := s.Append(payload(i)); err != nil {
					t.Fatal(err)
				}
			}
			size := s.Size()
			s.Close()
			files := segFiles(t, dir)
			if len(files) < 2 {
				t.Fatalf("want several segments, have %d", len(files))
			}
			last := files[len(files)-1]
			before, _ := os.Stat(last)
			f, err := os.OpenFile(last, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(c.tail)
			f.Close()

			core, logs := observer.New(zapcore.WarnLevel)
			s2 := open(t, dir, Options{SegmentSize: 600, Log: zap.New(core)})
			after, _ := os.Stat(last)
			if after.Size() != before.Size() {
				t.Errorf("newest segment is %d bytes after recovery, want %d (the tail cut off)", after.Size(), before.Size())
			}
			if s2.Size() != size {
				t.Errorf("Size = %d, want %d", s2.Size(), size)
			}
			if logs.FilterMessageSnippet("torn tail").Len() != 1 {
				t.Errorf("the truncation was not logged: %v", logs.All())
			}
			if got := replayAll(t, s2); !slices.EqualFunc(got, want, bytes.Equal) {
				t.Fatalf("replayed %d payloads, want %d in order", len(got), len(want))
			}
			// Appending after recovery starts a new segment and keeps order.
			if err := s2.Append([]byte("after")); err != nil {
				t.Fatal(err)
			}
			got := replayAll(t, s2)
			if len(got) != len(want)+1 || string(got[len(got)-1]) != "after" {
				t.Errorf("after recovery: %d payloads, last %q", len(got), got[len(got)-1])
			}
		})
	}
}

// TestCorruptMiddleFrame: a flipped bit in an older segment. Policy: stop
// at the first bad frame of that segment, skip the rest of it (logged,
// counted), and go on with the next segment.
func TestCorruptMiddleFrame(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentSize: 600})
	var all [][]byte
	for i := range 60 {
		all = append(all, payload(i))
		if err := s.Append(payload(i)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	files := segFiles(t, dir)
	if len(files) < 3 {
		t.Fatalf("want ≥3 segments, have %d", len(files))
	}

	// Corrupt the payload of the 3rd frame of the first segment.
	data, _ := os.ReadFile(files[0])
	off, frames := 0, 0
	var perSeg int
	for off < len(data) {
		n := int(binary.LittleEndian.Uint32(data[off:]))
		if frames == 2 {
			data[off+headerSize+1] ^= 0x40
		}
		off += headerSize + n
		frames++
	}
	perSeg = frames
	if err := os.WriteFile(files[0], data, 0o600); err != nil {
		t.Fatal(err)
	}
	sizeBefore := int64(0)
	for _, f := range files {
		st, _ := os.Stat(f)
		sizeBefore += st.Size()
	}

	core, logs := observer.New(zapcore.WarnLevel)
	s2 := open(t, dir, Options{SegmentSize: 600, Log: zap.New(core)})
	if logs.FilterMessageSnippet("corrupt frame").Len() != 1 {
		t.Errorf("Open did not log the corruption: %v", logs.All())
	}
	if st, _ := os.Stat(files[0]); st.Size() != int64(len(data)) {
		t.Errorf("Open rewrote an older segment (%d → %d bytes)", len(data), st.Size())
	}
	if s2.Size() != sizeBefore {
		t.Errorf("Size = %d, want %d", s2.Size(), sizeBefore)
	}
	want := append(slices.Clone(all[:2]), all[perSeg:]...)
	var got [][]byte
	var skipped int64
	err := s2.Drain(func(sg Segment) error {
		skipped += sg.Skipped
		for _, p := range sg.Payloads {
			got = append(got, bytes.Clone(p))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(got, want, bytes.Equal) {
		t.Fatalf("drained %d payloads, want %d (all but the corrupt segment's tail)", len(got), len(want))
	}
	if skipped == 0 || s2.SkippedBytes() != skipped {
		t.Errorf("Skipped = %d, SkippedBytes = %d", skipped, s2.SkippedBytes())
	}
	if s2.Size() != 0 || len(segFiles(t, dir)) != 0 {
		t.Errorf("drained spool still holds %d bytes", s2.Size())
	}
}

// Concurrent Appends (the request path overflowing into the spool) share
// fsyncs and lose nothing; each caller's payloads keep their order.
func TestConcurrentAppends(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentSize: 4096})
	const writers, each = 8, 100
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				if err := s.Append([]byte(fmt.Sprintf("%d/%d", g, i))); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	next := make([]int, writers)
	got := replayAll(t, s)
	for _, p := range got {
		var g, i int
		fmt.Sscanf(string(p), "%d/%d", &g, &i)
		if i != next[g] {
			t.Fatalf("writer %d: payload %d after %d", g, i, next[g]-1)
		}
		next[g]++
	}
	if len(got) != writers*each {
		t.Errorf("%d payloads, want %d", len(got), writers*each)
	}
}

func TestDirectoryLock(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: err = %v, want ErrLocked", err)
	}
	s.Close()
	s2, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s2.Close()
}

func TestParseSyncPolicy(t *testing.T) {
	for in, want := range map[string]SyncPolicy{"": SyncBatch, "batch": SyncBatch, "NEVER": SyncNever, "interval": SyncInterval} {
		if got, err := ParseSyncPolicy(in); err != nil || got != want {
			t.Errorf("ParseSyncPolicy(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseSyncPolicy("always"); err == nil {
		t.Error("ParseSyncPolicy(always) succeeded")
	}
}

// SyncInterval: Append returns without an fsync, and the spool's own
// goroutine fsyncs what was appended within SyncEvery; Close stops it.
func TestSyncInterval(t *testing.T) {
	s, err := Open(t.TempDir(), Options{Sync: SyncInterval, SyncEvery: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Append([]byte("one"), []byte("two")); err != nil {
		t.Fatal(err)
	}
	synced := func() bool {
		s.syncMu.Lock()
		defer s.syncMu.Unlock()
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.synced >= s.written
	}
	deadline := time.Now().Add(10 * time.Second)
	for !synced() {
		if time.Now().After(deadline) {
			t.Fatal("the appended frames were never fsynced")
		}
		time.Sleep(time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.syncDone:
	default:
		t.Error("Close left the sync goroutine running")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func crcOf(p []byte) uint32 { return crc32c(p) }

func BenchmarkAppend(b *testing.B) {
	for _, sync := range []SyncPolicy{SyncBatch, SyncNever} {
		b.Run(sync.String(), func(b *testing.B) {
			s, err := Open(b.TempDir(), Options{Sync: sync})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			batch := slices.Repeat([][]byte{bytes.Repeat([]byte{'p'}, 1200)}, 100)
			b.ReportAllocs()
			b.SetBytes(int64(100 * 1208))
			for b.Loop() {
				if err := s.Append(batch...); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAppendParallel: single-record appends from many goroutines, as
// Record does when the queue is full; group commit shares the fsyncs.
func BenchmarkAppendParallel(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	p := bytes.Repeat([]byte{'p'}, 1200)
	b.SetParallelism(64)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Append(p); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// An fsync in progress does not hold up appends: under SyncInterval the
// journal's appends are on the request path, and an fsync may take
// seconds on a disk busy with other writes (issue 17's latency tail).
func TestAppendDuringFsync(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	s := open(t, t.TempDir(), Options{Sync: SyncInterval, SyncEvery: time.Hour, fsync: func(f *os.File) error {
		once.Do(func() { close(entered); <-release })
		return f.Sync()
	}})
	if err := s.Append([]byte("before")); err != nil {
		t.Fatal(err)
	}
	synced := make(chan error, 1)
	go func() { synced <- s.Sync() }()
	<-entered
	appended := make(chan error, 1)
	go func() { appended <- s.Append([]byte("during")) }()
	select {
	case err := <-appended:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("Append waited for an fsync in progress")
	}
	close(release)
	if err := <-synced; err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil { // the append made during the first fsync
		t.Fatal(err)
	}
	if got := replayAll(t, s); len(got) != 2 || string(got[0]) != "before" || string(got[1]) != "during" {
		t.Fatalf("replayed %q", got)
	}
}
