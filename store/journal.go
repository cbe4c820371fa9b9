package store

import (
	"errors"
	"sync"

	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/store/spool"
)

// journalDir is the journal's directory inside the spool directory.
const journalDir = "journal"

// journalSegmentSize is the journal's segment size: small, so that a
// segment whose records are all stored is deleted soon after, and a
// restart replays little that is already stored.
const journalSegmentSize int64 = 4 << 20

// journal is the request log's write-ahead file. Record appends every
// record to it before it returns, that is before the gateway sends the
// answer's last byte, so a record whose answer reached the caller
// survives a crash of the process (and of the machine, with SyncBatch).
// The writer acknowledges records once PostgreSQL or the outage spool
// holds them; a segment all of whose records are acknowledged is deleted.
// What a crashed process leaves in it is moved to the outage spool at the
// next start and replayed idempotently, like any spooled record.
//
// Appends are grouped: while one goroutine writes (and fsyncs) a group,
// the records of concurrent callers gather into the next group; when the
// write is done, its writer hands the right to write (the busy token) to
// the next group's first caller, who writes that whole group in one call.
// So concurrency amortizes the write and the fsync, a lone caller pays
// one write and no hand-off, and each waiter is woken once, when its
// group is written.
//
// A journal is safe for concurrent use. Only the holder of the busy token
// touches the spool; while no one holds it, the next group is empty.
type journal struct {
	sp  *spool.Spool
	log *zap.Logger

	mu        sync.Mutex
	cur       *journalGroup  // records waiting for the next write
	busy      bool           // the token: its holder writes to or removes from sp
	open      map[uint64]int // segment → records appended and not acknowledged
	last      uint64         // segment of the last write: the active one
	removable []uint64       // segments to delete by the token's holder
	closed    bool
	idle      chan struct{} // close: signalled when the token is given back

	payloads [][]byte  // the token holder's scratch
	bufs     sync.Pool // *[]byte: group buffers
	encPool  sync.Pool // *[]byte: a caller's encoding buffer
}

// journalGroup is the records of one write and, once done, its outcome.
type journalGroup struct {
	buf  *[]byte
	ends []int
	seq  uint64
	err  error
	lead chan struct{} // the token, handed to the group's first caller
	done chan struct{} // closed when the group is written
}

var errJournalClosed = errors.New("store: request log journal is closed")

func openJournal(dir string, sync spool.SyncPolicy, log *zap.Logger) (*journal, error) {
	sp, err := spool.Open(dir, spool.Options{SegmentSize: journalSegmentSize, Sync: sync, Log: log})
	if err != nil {
		return nil, err
	}
	j := &journal{sp: sp, log: log, open: make(map[uint64]int), idle: make(chan struct{}, 1)}
	j.bufs.New = func() any { b := make([]byte, 0, 4096); return &b }
	j.encPool.New = func() any { b := make([]byte, 0, 1024); return &b }
	j.cur = j.newGroup()
	return j, nil
}

func (j *journal) newGroup() *journalGroup {
	return &journalGroup{buf: j.bufs.Get().(*[]byte), lead: make(chan struct{}, 1), done: make(chan struct{})}
}

// moveTo hands what an earlier process left in the journal to the outage
// spool and deletes it from the journal. It runs before any append.
func (j *journal) moveTo(sp *spool.Spool) (int, error) {
	n := 0
	err := j.sp.Drain(func(sg spool.Segment) error {
		if len(sg.Payloads) == 0 {
			return nil
		}
		n += len(sg.Payloads)
		return sp.Append(sg.Payloads...)
	})
	return n, err
}

// append writes r and returns the segment it is in, once the write (and,
// with SyncBatch, the fsync) covering it is done.
func (j *journal) append(r *LogRecord) (uint64, error) {
	bp := j.encPool.Get().(*[]byte)
	enc := AppendLogRecord((*bp)[:0], r)

	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		j.putEnc(bp, enc)
		return 0, errJournalClosed
	}
	g := j.cur
	first := len(g.ends) == 0
	*g.buf = append(*g.buf, enc...)
	g.ends = append(g.ends, len(*g.buf))
	j.putEnc(bp, enc)
	if !j.busy { // then g held nothing before: lead it at once
		j.busy = true
		j.cur = j.newGroup()
		j.mu.Unlock()
		j.write(g)
		return g.seq, g.err
	}
	j.mu.Unlock()
	if first {
		<-g.lead // the token: g is detached from cur by whoever handed it
		j.write(g)
		return g.seq, g.err
	}
	<-g.done
	return g.seq, g.err
}

func (j *journal) putEnc(bp *[]byte, enc []byte) {
	if cap(enc) <= 64<<10 {
		*bp = enc[:0]
		j.encPool.Put(bp)
	}
}

// write appends group g's records to the spool in one call, wakes its
// callers, and passes the token on. The caller holds the token.
func (j *journal) write(g *journalGroup) {
	payloads := j.payloads[:0]
	start := 0
	for _, end := range g.ends {
		payloads = append(payloads, (*g.buf)[start:end])
		start = end
	}
	g.seq, g.err = j.sp.AppendSeq(payloads...)
	clear(payloads)
	j.payloads = payloads
	if cap(*g.buf) <= 1<<20 {
		*g.buf = (*g.buf)[:0]
		j.bufs.Put(g.buf)
	}
	g.buf = nil

	j.mu.Lock()
	if g.err == nil {
		j.open[g.seq] += len(g.ends)
		if j.last != 0 && j.last != g.seq && j.open[j.last] == 0 {
			j.removable = append(j.removable, j.last) // sealed by this write, all acknowledged
		}
		j.last = g.seq
	}
	close(g.done)
	j.releaseLocked()
	j.mu.Unlock()
}

// releaseLocked deletes the removable segments and passes the token on:
// to the next group's first caller if it has records, else back to no
// one. j.mu is held (and released while deleting); the caller holds the
// token.
func (j *journal) releaseLocked() {
	for len(j.removable) > 0 {
		seqs := j.removable
		j.removable = nil
		for _, seq := range seqs {
			if j.open[seq] > 0 {
				continue // written to again since it was marked (the active segment)
			}
			delete(j.open, seq)
			j.mu.Unlock()
			err := j.sp.Remove(seq)
			j.mu.Lock()
			if err != nil && !errors.Is(err, spool.ErrClosed) {
				j.log.Warn("request log: deleting a journal segment", zap.Uint64("segment", seq), zap.Error(err))
			}
		}
	}
	if next := j.cur; len(next.ends) > 0 {
		j.cur = j.newGroup()
		next.lead <- struct{}{} // busy stays true: the token moves
		return
	}
	j.busy = false
	select {
	case j.idle <- struct{}{}:
	default:
	}
}

// ack acknowledges recs: PostgreSQL or the outage spool holds them, or
// they are dead letters. Records with no journal segment are skipped.
func (j *journal) ack(recs []LogRecord) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for i := 0; i < len(recs); {
		seq := recs[i].jseq
		k := i + 1
		for k < len(recs) && recs[k].jseq == seq {
			k++
		}
		if seq != 0 {
			j.ackLocked(seq, k-i)
		}
		i = k
	}
	j.collectLocked()
}

func (j *journal) ackLocked(seq uint64, n int) {
	left := j.open[seq] - n
	j.open[seq] = left
	if left > 0 {
		return
	}
	if seq != j.last {
		j.removable = append(j.removable, seq)
		return
	}
	// The active segment: delete it too once it is big enough to be worth
	// a new file, so that a quiet gateway's journal stays small.
	if _, size := j.sp.ActiveSize(); size >= journalSegmentSize/4 {
		j.removable = append(j.removable, seq)
	}
}

// collectLocked deletes the removable segments now if no one holds the
// busy token; else its holder does when it finishes.
func (j *journal) collectLocked() {
	if len(j.removable) == 0 || j.busy || j.closed {
		return
	}
	j.busy = true
	j.releaseLocked()
}

// size is the journal's size on disk.
func (j *journal) size() int64 { return j.sp.Size() }

// close deletes every segment whose records are all acknowledged and
// closes the journal. The records not acknowledged stay on disk for the
// next process. No append may be under way.
func (j *journal) close() error {
	j.mu.Lock()
	j.closed = true
	for j.busy {
		j.mu.Unlock()
		<-j.idle
		j.mu.Lock()
	}
	for seq, n := range j.open {
		if n <= 0 {
			j.removable = append(j.removable, seq)
		}
	}
	j.busy = true
	j.releaseLocked()
	j.mu.Unlock()
	return j.sp.Close()
}
