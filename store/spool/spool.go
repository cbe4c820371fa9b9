// Package spool is a disk queue of opaque payloads for the time PostgreSQL
// cannot take the request log: an append-only sequence of segment files,
// each a run of length- and CRC-framed payloads, replayed oldest first and
// deleted segment by segment once the caller has stored their payloads
// elsewhere.
//
// # Format
//
// A segment is a file named NNNNNNNNNNNNNNNNNNNN.seg (a 20-digit sequence
// number; a higher number is newer). It holds frames back to back:
//
//	+----------------+----------------+-----------------+
//	| length  uint32 | crc32c  uint32 | payload (length)|
//	+----------------+----------------+-----------------+
//
// Both integers are little-endian; the CRC is CRC-32C (Castagnoli) of the
// payload. Payloads are never empty, so a run of zero bytes (what a crash
// can leave in a file's tail) is never mistaken for frames.
//
// # Recovery and corruption policy
//
// Open scans every segment. A bad frame — a header or payload cut short, a
// zero or impossible length, a CRC mismatch — ends the readable part of its
// segment: everything from the first bad frame to the end of that segment
// is skipped, and logged with the segment, the offset and the byte count.
// In the newest segment that is what a crash during a write leaves behind
// (kill -9, power loss), so Open truncates the file there, keeping every
// complete frame before it. Older segments are not rewritten; their bad
// tails are skipped at replay (and logged again), and go away when the
// segment is deleted after its intact frames were replayed. There is no
// resynchronisation past a bad frame: without a magic marker a guessed
// frame boundary could turn garbage into a payload.
//
// Open never appends to a segment that already exists; the first Append
// starts a new one.
//
// # Concurrency
//
// A Spool is safe for concurrent use. Appends are written one at a time
// and share their fsyncs (group commit, see SyncBatch). Drain and Replay
// first seal the segment being appended to, then read only sealed
// segments, so they run alongside Append; one Drain or Replay runs at a
// time. A lock file (LOCK, flock) keeps a second process from opening the
// same directory. Open reads every segment once (one at a time) to
// recover it.
//
// # Disk errors
//
// A failed write is undone (the segment is cut back) and returned. A
// failed fsync breaks the spool: every later Append returns the error
// until the spool is reopened, because after a failed fsync the kernel
// may have dropped the data it could not write.
package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Defaults of Options' zero fields.
const (
	// DefaultSegmentSize: a segment is rolled once it would grow beyond 16 MiB.
	DefaultSegmentSize int64 = 16 << 20
	// MaxPayload is the largest payload Append takes (256 MiB).
	MaxPayload = 256 << 20
	// DefaultSyncEvery is SyncInterval's period.
	DefaultSyncEvery = time.Second
)

// Options tunes Open. The zero value is ready to use.
type Options struct {
	// SegmentSize is the size at which the segment being appended to is
	// closed and a new one started: an Append that would take the segment
	// beyond it goes to a new segment, unless the segment is empty (one
	// Append never spans two segments, so a single large Append can make a
	// segment bigger than this). 0 means DefaultSegmentSize.
	SegmentSize int64
	// Sync is the fsync policy; the zero value is SyncBatch.
	Sync SyncPolicy
	// SyncEvery is SyncInterval's period. 0 means DefaultSyncEvery.
	SyncEvery time.Duration

	// fsync forces a segment to stable storage: (*os.File).Sync; tests
	// replace it.
	fsync func(*os.File) error
	// Log receives recovery and corruption reports; nil means no logging.
	Log *zap.Logger
}

// Errors returned by the Spool; match them with errors.Is.
var (
	ErrClosed       = errors.New("spool: closed")
	ErrEmptyPayload = errors.New("spool: empty payload")
	ErrTooLarge     = errors.New("spool: payload larger than spool.MaxPayload")
	ErrLocked       = errors.New("spool: directory is in use by another process")
)

const (
	headerSize = 8
	segSuffix  = ".seg"
	lockName   = "LOCK"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// segment is one file on disk.
type segment struct {
	seq  uint64
	size int64 // bytes in the file
}

// Spool is an open spool directory.
type Spool struct {
	dir  string
	opts Options
	log  *zap.Logger
	lock io.Closer

	mu       sync.Mutex // guards everything below, and the active file
	closed   bool
	segs     []segment // sealed segments, oldest first
	active   *os.File  // nil until the next Append
	activeSq uint64
	activeSz int64
	nextSeq  uint64
	buf      []byte // frame assembly buffer, reused
	written  uint64 // generation of the last write
	broken   error  // set by a failed fsync: Append refuses from then on

	syncMu sync.Mutex // one fsync at a time (group commit)
	synced uint64     // generation known to be on stable storage; guarded by syncMu

	readMu  sync.Mutex // one Drain or Replay at a time
	size    atomic.Int64
	skipped atomic.Int64

	stopSync chan struct{} // SyncInterval: closed by Close to stop the syncer
	syncDone chan struct{} // SyncInterval: closed when the syncer has stopped
	stopOnce sync.Once
}

// Open opens (creating it if needed) the spool in dir and recovers it: see
// the package documentation for what happens to torn or corrupt frames.
func Open(dir string, opts Options) (*Spool, error) {
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.SyncEvery <= 0 {
		opts.SyncEvery = DefaultSyncEvery
	}
	if opts.fsync == nil {
		opts.fsync = (*os.File).Sync
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: creating %s: %w", dir, err)
	}
	lk, err := lockDir(filepath.Join(dir, lockName))
	if err != nil {
		return nil, err
	}
	s := &Spool{dir: dir, opts: opts, log: opts.Log, lock: lk, nextSeq: 1}
	if err := s.recover(); err != nil {
		lk.Close()
		return nil, err
	}
	if opts.Sync == SyncInterval {
		s.stopSync, s.syncDone = make(chan struct{}), make(chan struct{})
		go s.syncLoop()
	}
	return s, nil
}

// recover lists the segments, scans each, and truncates the newest one
// after its last intact frame.
func (s *Spool) recover() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("spool: reading %s: %w", s.dir, err)
	}
	for _, e := range entries {
		seq, ok := parseSegName(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		s.segs = append(s.segs, segment{seq: seq})
	}
	slices.SortFunc(s.segs, func(a, b segment) int { return cmpU64(a.seq, b.seq) })
	var (
		total int64
		data  []byte
	)
	for i := range s.segs {
		sg := &s.segs[i]
		path := s.segPath(sg.seq)
		var err error
		data, err = readSegment(path, data)
		if err != nil {
			return fmt.Errorf("spool: reading %s: %w", path, err)
		}
		good, frames, reason := scan(data, nil)
		sg.size = int64(len(data))
		if good < len(data) {
			last := i == len(s.segs)-1
			if last {
				s.log.Warn("spool: truncating the torn tail of the newest segment",
					zap.String("segment", path), zap.Int("offset", good),
					zap.Int("bytes", len(data)-good), zap.Int("intact_frames", frames), zap.String("reason", reason))
				if err := os.Truncate(path, int64(good)); err != nil {
					return fmt.Errorf("spool: truncating %s: %w", path, err)
				}
				if err := s.syncFile(path); err != nil {
					return err
				}
				sg.size = int64(good)
			} else {
				s.log.Error("spool: corrupt frame; the rest of this segment will be skipped",
					zap.String("segment", path), zap.Int("offset", good),
					zap.Int("bytes", len(data)-good), zap.Int("intact_frames", frames), zap.String("reason", reason))
			}
		}
		total += sg.size
		s.nextSeq = max(s.nextSeq, sg.seq+1)
	}
	s.size.Store(total)
	return nil
}

// scan walks the frames of data. It returns the length of the intact
// prefix, the number of intact frames, and why it stopped early ("" when
// the whole of data is intact). fn, if not nil, receives each intact
// payload (a sub-slice of data).
func scan(data []byte, fn func([]byte)) (good, frames int, reason string) {
	off := 0
	for off < len(data) {
		if len(data)-off < headerSize {
			return off, frames, "short header"
		}
		n := binary.LittleEndian.Uint32(data[off:])
		sum := binary.LittleEndian.Uint32(data[off+4:])
		if n == 0 || n > MaxPayload {
			return off, frames, "impossible length " + strconv.FormatUint(uint64(n), 10)
		}
		end := off + headerSize + int(n)
		if end > len(data) {
			return off, frames, "short payload"
		}
		p := data[off+headerSize : end]
		if crc32c(p) != sum {
			return off, frames, "crc mismatch"
		}
		if fn != nil {
			fn(p)
		}
		frames++
		off = end
	}
	return off, frames, ""
}

// Append writes payloads as frames at the end of the spool, in order, in
// one write to one segment. With SyncBatch it then waits for an fsync that
// covers the write; concurrent Append calls share fsyncs (group commit),
// so many small appends cost about one fsync per disk round trip, not one
// each.
//
// When Append returns nil every payload is stored (durably, with
// SyncBatch). When the write fails, none is: the segment is cut back to
// where it was. When an fsync fails the spool is broken: that Append and
// every later one return the error (like PostgreSQL, the spool does not
// trust a file after a failed fsync; reopen it after fixing the disk), and
// the payloads of the calls that got the error may or may not survive, so
// their caller must store them elsewhere; a consumer that is idempotent,
// as the request log is, does not mind seeing them twice.
//
// Payloads must not be empty or larger than MaxPayload. Append does not
// keep them.
func (s *Spool) Append(payloads ...[]byte) error {
	_, err := s.AppendSeq(payloads...)
	return err
}

// AppendSeq is Append that also returns the sequence number of the
// segment the payloads went to (0 when there were none), for callers that
// delete segments themselves once their payloads are no longer needed
// (see Remove).
func (s *Spool) AppendSeq(payloads ...[]byte) (uint64, error) {
	if len(payloads) == 0 {
		return 0, nil
	}
	var n int64
	for _, p := range payloads {
		if len(p) == 0 {
			return 0, ErrEmptyPayload
		}
		if len(p) > MaxPayload {
			return 0, ErrTooLarge
		}
		n += headerSize + int64(len(p))
	}
	s.mu.Lock()
	gen, err := s.writeLocked(payloads, n)
	seq := s.activeSq
	s.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if s.opts.Sync != SyncBatch {
		return seq, nil
	}
	return seq, s.syncTo(gen)
}

// writeLocked writes the frames and returns the write's generation.
func (s *Spool) writeLocked(payloads [][]byte, n int64) (uint64, error) {
	if s.closed {
		return 0, ErrClosed
	}
	if s.broken != nil {
		return 0, s.broken
	}
	if s.active != nil && s.activeSz > 0 && s.activeSz+n > s.opts.SegmentSize {
		s.sealLocked()
		if s.broken != nil {
			return 0, s.broken
		}
	}
	if s.active == nil {
		if err := s.createLocked(); err != nil {
			return 0, err
		}
	}
	buf := s.buf[:0]
	for _, p := range payloads {
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(p)))
		buf = binary.LittleEndian.AppendUint32(buf, crc32c(p))
		buf = append(buf, p...)
	}
	if cap(buf) <= 4<<20 {
		s.buf = buf // keep ordinary buffers, let huge ones go
	}
	if _, err := s.active.Write(buf); err != nil {
		// Cut the segment back so that no frame of this call remains. If
		// even that fails, seal the segment: recovery and replay stop at its
		// first bad frame.
		if terr := s.active.Truncate(s.activeSz); terr != nil {
			s.log.Error("spool: cannot cut back a failed append; sealing the segment",
				zap.String("segment", s.segPath(s.activeSq)), zap.Error(terr))
			if st, _ := s.active.Stat(); st != nil {
				s.size.Add(st.Size() - s.activeSz)
				s.activeSz = st.Size()
			}
			s.sealLocked()
		}
		return 0, fmt.Errorf("spool: appending: %w", err)
	}
	s.activeSz += n
	s.size.Add(n)
	s.written++
	return s.written, nil
}

// createLocked starts a new segment file.
func (s *Spool) createLocked() error {
	seq := s.nextSeq
	path := s.segPath(seq)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("spool: creating segment: %w", err)
	}
	if s.opts.Sync != SyncNever {
		if err := syncDir(s.dir); err != nil {
			f.Close()
			os.Remove(path)
			return err
		}
	}
	s.nextSeq++
	s.active, s.activeSq, s.activeSz = f, seq, 0
	return nil
}

// sealLocked closes the active segment (after an fsync, with SyncBatch,
// since Append's waiters only fsync the active one); an empty one is
// removed.
func (s *Spool) sealLocked() {
	if s.active == nil {
		return
	}
	if s.opts.Sync != SyncNever && s.activeSz > 0 && s.broken == nil {
		if err := s.active.Sync(); err != nil {
			s.breakLocked(err)
		}
	}
	if err := s.active.Close(); err != nil {
		s.log.Warn("spool: closing segment", zap.String("segment", s.segPath(s.activeSq)), zap.Error(err))
	}
	if s.activeSz == 0 {
		os.Remove(s.segPath(s.activeSq))
	} else {
		s.segs = append(s.segs, segment{seq: s.activeSq, size: s.activeSz})
	}
	s.active, s.activeSq, s.activeSz = nil, 0, 0
}

// Segment is one sealed segment, as Drain hands it out.
type Segment struct {
	// Seq is the segment's sequence number: its file name, and a stable
	// identity while it is handed out again after a failed Drain.
	Seq uint64
	// Payloads are the segment's intact frames, oldest first. They share
	// one buffer that is valid only until the callback returns.
	Payloads [][]byte
	// Skipped is the number of bytes after the first bad frame that were
	// not handed out (0 for an intact segment); they were logged.
	Skipped int64
}

// Drain seals the segment being appended to, then hands every segment
// that existed at the call to fn, oldest first. When fn returns nil the
// segment is deleted: the caller has stored its payloads elsewhere. When fn
// returns an error Drain stops and returns it; that segment and every later
// one stay on disk, and the next Drain (or, after a restart, Open and
// Drain) hands them out again, so fn must tolerate seeing a payload twice.
// Appends made while Drain runs go to a new segment, which the next Drain
// hands out.
func (s *Spool) Drain(fn func(Segment) error) error {
	return s.read(fn, true)
}

// Replay calls fn for every intact frame of every segment, oldest first,
// and deletes nothing. An error from fn stops it and is returned. The
// payload is valid only until fn returns.
func (s *Spool) Replay(fn func(payload []byte) error) error {
	return s.read(func(sg Segment) error {
		for _, p := range sg.Payloads {
			if err := fn(p); err != nil {
				return err
			}
		}
		return nil
	}, false)
}

func (s *Spool) read(fn func(Segment) error, del bool) error {
	s.readMu.Lock()
	defer s.readMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.sealLocked()
	segs := slices.Clone(s.segs)
	s.mu.Unlock()

	// The next segment is read and checked while fn takes the current
	// one (a replay's fn is PostgreSQL's writes): two buffers, each
	// reused for every other segment, since payloads are valid only
	// until fn returns.
	var bufs [2]loaded
	next := make(chan *loaded, 1)
	load := func(k int) {
		l := &bufs[k%2]
		l.load(s.segPath(segs[k].seq))
		next <- l
	}
	if len(segs) > 0 {
		go load(0)
	}
	for k, sg := range segs {
		l := <-next
		if k+1 < len(segs) {
			go load(k + 1)
		}
		if l.err != nil {
			return l.err
		}
		skipped := int64(len(l.data) - l.good)
		if skipped > 0 {
			s.skipped.Add(skipped)
			s.log.Error("spool: corrupt frame; skipping the rest of the segment",
				zap.String("segment", l.path), zap.Int("offset", l.good), zap.Int64("bytes", skipped),
				zap.Int("intact_frames", l.frames), zap.String("reason", l.reason))
		}
		if err := fn(Segment{Seq: sg.seq, Payloads: l.payloads, Skipped: skipped}); err != nil {
			return err
		}
		if del {
			if err := s.remove(sg); err != nil {
				return err
			}
		}
	}
	return nil
}

// loaded is one segment read and checked by read, in memory reused for
// the segment after next.
type loaded struct {
	path     string
	data     []byte
	payloads [][]byte
	good     int // bytes of intact frames
	frames   int
	reason   string // why the frames stop before the end
	err      error
}

func (l *loaded) load(path string) {
	l.path, l.payloads = path, l.payloads[:0]
	l.data, l.err = readSegment(path, l.data)
	if l.err != nil {
		l.err = fmt.Errorf("spool: reading %s: %w", path, l.err)
		return
	}
	l.good, l.frames, l.reason = scan(l.data, func(p []byte) { l.payloads = append(l.payloads, p) })
}

// readSegment reads the whole file at path into buf, grown as needed, and
// returns it. A pass over the segments reuses its buffers: os.ReadFile's
// fresh buffer per segment cost a replay 110-130 ms of page faults per
// 40 MB segment (a batch of 32,768 records of ~1.2 KB), an eighth of the
// time PostgreSQL then took to write it, against 8 ms into memory already
// touched (BenchmarkWriterReplay).
func readSegment(path string, buf []byte) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return buf, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return buf, err
	}
	n := int(fi.Size())
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(f, buf); err != nil {
		return buf, err
	}
	return buf, nil
}

// remove deletes a sealed segment that Drain's callback accepted.
func (s *Spool) remove(sg segment) error {
	if err := os.Remove(s.segPath(sg.seq)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("spool: deleting a replayed segment: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := slices.IndexFunc(s.segs, func(x segment) bool { return x.seq == sg.seq }); i >= 0 {
		s.segs = slices.Delete(s.segs, i, i+1)
	}
	s.size.Add(-sg.size)
	return nil
}

// Remove deletes the segment seq, sealing it first if it is the one being
// appended to (the next Append starts a new segment). It is for a caller
// that tracks its payloads itself (AppendSeq) and knows that none of the
// segment's is needed any more; the caller must make sure that no Append
// into seq is under way. Removing a segment that does not exist is not an
// error.
func (s *Spool) Remove(seq uint64) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.active != nil && s.activeSq == seq {
		s.sealLocked()
	}
	i := slices.IndexFunc(s.segs, func(x segment) bool { return x.seq == seq })
	if i < 0 {
		s.mu.Unlock()
		return nil
	}
	sg := s.segs[i]
	s.mu.Unlock()
	return s.remove(sg)
}

// ActiveSize is the size of the segment being appended to and its
// sequence number (0, 0 when there is none).
func (s *Spool) ActiveSize() (seq uint64, size int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active == nil {
		return 0, 0
	}
	return s.activeSq, s.activeSz
}

// Size is the number of bytes in the spool's segments, frame headers
// included: what it occupies on disk, give or take file-system blocks.
func (s *Spool) Size() int64 { return s.size.Load() }

// Segments is the number of segment files, including the one being
// appended to.
func (s *Spool) Segments() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.segs)
	if s.active != nil {
		n++
	}
	return n
}

// SkippedBytes counts the bytes that Drain and Replay skipped after a bad
// frame since Open.
func (s *Spool) SkippedBytes() int64 { return s.skipped.Load() }

// Dir is the spool's directory.
func (s *Spool) Dir() string { return s.dir }

// Close closes the segment being appended to and releases the directory.
// It does not delete anything. It is idempotent; Append, Drain and Replay
// return ErrClosed afterwards.
func (s *Spool) Close() error {
	if s.stopSync != nil {
		s.stopOnce.Do(func() { close(s.stopSync) })
		<-s.syncDone
	}
	s.readMu.Lock()
	defer s.readMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.sealLocked()
	return s.lock.Close()
}

func (s *Spool) segPath(seq uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%020d%s", seq, segSuffix))
}

func parseSegName(name string) (uint64, bool) {
	base, ok := strings.CutSuffix(name, segSuffix)
	if !ok || len(base) != 20 {
		return 0, false
	}
	seq, err := strconv.ParseUint(base, 10, 64)
	return seq, err == nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func crc32c(p []byte) uint32 { return crc32.Checksum(p, castagnoli) }
