package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/store/spool"
)

// Errors of the request-log writer; match them with errors.Is.
var (
	// ErrSpoolFull: the request log cannot take another record without
	// blocking the caller. With a spool: the spool holds SpoolMaxBytes or
	// more, or its last write failed and PostgreSQL has not taken a record
	// since. Without a spool: the queue is full. The gateway answers 503
	// before forwarding the request, so that nothing it accepts is dropped.
	ErrSpoolFull = errors.New("store: request log spool is full")
	// ErrWriterClosed: Close was called (or Run has returned); Run after
	// that, or Admit, return it.
	ErrWriterClosed = errors.New("store: request log writer is closed")
	// ErrRecordsLost: the final flush could place some records neither in
	// PostgreSQL nor in the spool before its deadline. They were logged by
	// request id and counted in WriterStats.Lost.
	ErrRecordsLost = errors.New("store: request log records lost at shutdown")
)

// Defaults of WriterOptions' zero fields, in one place.
const (
	DefaultQueueSize            = 65536                  // records; ~200 B of channel each, allocated up front (~13 MiB)
	DefaultBatchSize            = 5000                   // records per batch from the queue (and per replay chunk); see BatchSize
	DefaultFlushInterval        = 200 * time.Millisecond // longest a record waits for its batch to fill
	DefaultSpoolMaxBytes  int64 = 1 << 30                // 1 GiB; Admit says ErrSpoolFull at or above it
	DefaultWriteTimeout         = 5 * time.Second        // one tenant transaction
	DefaultMaxBackoff           = 5 * time.Second        // longest wait between tries while PostgreSQL is down
	DefaultDrainTimeout         = 10 * time.Second       // the final flush when Run's ctx ends (Close uses its own ctx)
	maxDefaultConcurrency       = 4                      // Concurrency 0: half the Store's MaxConns, 1 to 4
	minBackoff                  = 100 * time.Millisecond // first wait after a failure; doubles up to MaxBackoff
	maxPingTimeout              = 2 * time.Second        // a ping before a replay: min(WriteTimeout, this)
)

// WriterOptions tunes NewWriter. Every zero field takes the default named
// beside it (see the Default* constants).
type WriterOptions struct {
	// QueueSize bounds the in-memory queue between Record and Run.
	// 0: DefaultQueueSize.
	QueueSize int
	// BatchSize is the most records Run takes from the queue for one
	// write (split into one transaction per organization), and the chunk
	// size of a replay. Under load every batch is full, so it sets the rows
	// per tenant transaction, which is what throughput depends on (each
	// commit costs a WAL flush and four round trips): with 100 active
	// tenants, 5000 gives ~50 rows per transaction; 1000 gives ~10 and a
	// third of the throughput. Light load makes batches by FlushInterval,
	// not by size. 0: DefaultBatchSize.
	BatchSize int
	// FlushInterval is how long Run waits, after the first record of a
	// batch, for the batch to fill. 0: DefaultFlushInterval.
	FlushInterval time.Duration
	// SpoolDir is the directory of the disk spool (store/spool), which is
	// what makes the log durable across a PostgreSQL outage, a full queue
	// and a restart. "": no spool; then a PostgreSQL failure is retried
	// with backoff while the queue fills, and Record blocks once it is
	// full (see Record).
	SpoolDir string
	// SpoolMaxBytes is the spool size (journal included) at which Admit starts to return
	// ErrSpoolFull. It is a soft limit: records of requests already
	// admitted are still spooled beyond it. 0: DefaultSpoolMaxBytes.
	SpoolMaxBytes int64
	// SpoolSegmentSize is the spool's segment size. 0:
	// spool.DefaultSegmentSize (16 MiB).
	SpoolSegmentSize int64
	// Fsync is the fsync policy of the spool and the journal. The zero
	// value, spool.SyncBatch, makes every append (each Record's journal
	// entry, a batch, an overflowing record) durable before it returns,
	// concurrent appends sharing one fsync; SyncInterval fsyncs every
	// second and SyncNever leaves flushing to the kernel (a machine crash
	// can lose the last second, or seconds, of records; a process crash
	// cannot).
	Fsync spool.SyncPolicy
	// WriteTimeout bounds each tenant transaction (and each ping before a
	// replay, which is also capped at 2s). 0: DefaultWriteTimeout.
	WriteTimeout time.Duration
	// MaxBackoff caps the wait between tries while PostgreSQL is
	// unavailable (the wait starts at 100ms and doubles, with jitter).
	// 0: DefaultMaxBackoff.
	MaxBackoff time.Duration
	// Concurrency is how many tenant transactions of one batch run at
	// once, each on its own connection of the Store's pool (so keep it
	// below the pool's MaxConns, which the gateway's key look-ups share).
	// 1 writes them one after another. 0: half the pool's MaxConns, at
	// least 1 and at most 4.
	Concurrency int
	// DrainTimeout bounds the final flush that Run performs when its ctx
	// ends. (Close's ctx bounds the flush Close asks for.)
	// 0: DefaultDrainTimeout.
	DrainTimeout time.Duration
	// Log receives outages, replays and dead letters; never prompt or
	// response text. nil: no logging.
	Log *zap.Logger
}

func (o *WriterOptions) setDefaults() {
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if o.SpoolMaxBytes <= 0 {
		o.SpoolMaxBytes = DefaultSpoolMaxBytes
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = DefaultDrainTimeout
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
}

// WriterStats are the writer's counters since NewWriter. Once the queue
// and the spool are empty, and if the spool held nothing from an earlier
// process:
//
//	Enqueued = Written + Replayed + DeadLetters + Lost
//	Spooled  = Replayed + (dead letters among spooled records)
type WriterStats struct {
	Enqueued   int64 // records accepted by Record, whatever the path below
	Overflowed int64 // ...of which the queue was full and Record appended them to the spool itself
	Blocked    int64 // ...of which Record waited for room in the queue (no spool, or the spool failing)

	Written      int64 // records committed straight from the queue
	Spooled      int64 // records appended to the spool (by Record on overflow, or by Run)
	Replayed     int64 // records committed from the spool, including an earlier process's
	Duplicates   int64 // committed records whose row (organization, created_at, id) was already stored: no-ops
	DeadLetters  int64 // records PostgreSQL refused row by row (or undecodable spool frames); logged by request id
	Lost         int64 // records neither PostgreSQL nor the spool took before the final flush's deadline
	Transactions int64 // tenant transactions committed

	BatchesFailed int64 // writes (a batch, a tenant's rows, a replay chunk) PostgreSQL did not take whole

	QueueDepth        int   // records in the queue now
	SpoolBytes        int64 // bytes in the spool now
	JournalBytes      int64 // bytes in the journal now (records not yet in PostgreSQL or the spool, and stored ones of its newest segment)
	SpoolCorruptBytes int64 // spool bytes skipped after a bad frame (see store/spool)
	Replaying         bool  // the spool holds records: new batches go to the spool until it is replayed
}

// Writer is the request log: Record queues a LogRecord from the request
// path, and the one goroutine running Run writes the queue to the prompts
// table in batches, one transaction per organization, under that
// organization's Row-Level-Security context.
//
// # Overflow policy
//
// Nothing accepted is dropped. Record enqueues if there is room; if the
// queue is full it appends the record to the spool itself (sharing an
// fsync with concurrent callers);
// only without a spool (or with a spool whose writes fail) does it wait
// for room. Admit lets the gateway refuse a request (503) before
// forwarding it when the spool is at SpoolMaxBytes.
//
// # Outages and replay
//
// A batch that PostgreSQL cannot take because it is unreachable or
// failing (anything but a refusal of the data itself) goes to the spool,
// and the writer switches to replay mode: new batches go to the spool too,
// behind the older ones, so that order is kept; every backoff interval
// (100ms doubling to MaxBackoff) it pings PostgreSQL and, once it answers,
// replays the spool oldest segment first, deleting each segment once all
// its records are committed. When the spool is empty, batches go straight
// to PostgreSQL again. Inserts are idempotent on the primary key
// (organization_id, created_at, id), which Record fixes before queueing
// or spooling, so a segment replayed twice (a crash between the commit
// and the deletion) adds no rows. A spool left by an earlier process is
// replayed the same way when Run starts.
//
// # Dead letters
//
// When PostgreSQL refuses a tenant's multi-row insert because of the data
// (SQLSTATE classes 22, 23 and 54: a deleted organization, a violated
// check, bad text), the writer retries that tenant's rows one by one
// (savepoints in one transaction). The rows it still refuses are dead
// letters: logged at error level with organization, request id and
// SQLSTATE (never text) and counted. That is the only sanctioned loss.
type Writer struct {
	st    *Store
	opts  WriterOptions
	log   *zap.Logger
	spool *spool.Spool // nil without SpoolDir
	// journal holds every record from Record until PostgreSQL or the spool
	// does (see journal); nil without SpoolDir.
	journal *journal
	queue   chan LogRecord
	// full wakes Run when the queue holds a batch's worth (fullAt
	// records): while a batch fills, Run sleeps on its timer and this,
	// not on the queue, so a busy gateway wakes it a few times a batch
	// rather than once a record.
	full   chan struct{}
	fullAt int

	// Record and the final flush hand over through these: see flush.
	inflight atomic.Int64
	closed   atomic.Bool

	mu       sync.Mutex // guards started
	started  bool       // Run, or Close's own flush, has begun
	stop     chan struct{}
	stopOnce sync.Once
	closeCtx context.Context // set before stop is closed; governs the flush Close asks for
	done     chan struct{}   // closed when the final flush has finished
	runErr   error           // the final flush's result; read after done

	degraded    atomic.Bool // a spool append failed and nothing has been stored since
	journalDown atomic.Bool // the last journal append failed

	enqueued, overflowed, blocked                  atomic.Int64
	written, spooled, replayed, duplicates         atomic.Int64
	deadLetters, lost, transactions, batchesFailed atomic.Int64
	replayingFlag                                  atomic.Bool

	rs runState // owned by the goroutine running Run (or Close's flush)
}

// runState is the writer goroutine's own state and scratch space.
type runState struct {
	replaying bool        // the spool holds records to replay before writing directly
	held      []LogRecord // records neither PostgreSQL nor the spool took; retried first
	backoff   time.Duration
	nextTry   time.Time // when to try PostgreSQL (or the spool) again
	down      bool      // the last try failed (to log transitions once)

	progress struct { // which records of the segment being replayed are done
		seq   uint64
		valid bool
		done  []bool
	}

	timer    *time.Timer
	batch    []LogRecord
	done     []bool
	groups   map[uuid.UUID]int
	groupIdx [][]int
	orgs     []uuid.UUID
	scratch  []*scratch // one per tenant-transaction worker
	enc      []byte
	payloads [][]byte
	replay   []LogRecord
	replayIx []int
}

// NewWriter returns a Writer that writes through st. With a SpoolDir it
// opens (and recovers) the spool, so records an earlier process left there
// are replayed once Run starts. It starts no goroutine: the caller runs
// Run, and stops it by cancelling Run's ctx or calling Close.
func NewWriter(st *Store, opts WriterOptions) (*Writer, error) {
	if st == nil {
		return nil, errors.New("store: NewWriter needs a Store")
	}
	opts.setDefaults()
	if opts.Concurrency <= 0 {
		opts.Concurrency = min(max(1, int(st.pool.Config().MaxConns/2)), maxDefaultConcurrency)
	}
	w := &Writer{
		st:     st,
		opts:   opts,
		log:    opts.Log.Named("writer"),
		queue:  make(chan LogRecord, opts.QueueSize),
		full:   make(chan struct{}, 1),
		fullAt: max(1, min(opts.BatchSize, opts.QueueSize/2)),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	if opts.SpoolDir != "" {
		sp, err := spool.Open(opts.SpoolDir, spool.Options{
			SegmentSize: opts.SpoolSegmentSize,
			Sync:        opts.Fsync,
			Log:         opts.Log.Named("spool"),
		})
		if err != nil {
			return nil, fmt.Errorf("store: opening the request log spool: %w", err)
		}
		w.spool = sp
		j, err := openJournal(filepath.Join(opts.SpoolDir, journalDir), opts.Fsync, opts.Log.Named("journal"))
		if err != nil {
			sp.Close()
			return nil, fmt.Errorf("store: opening the request log journal: %w", err)
		}
		n, err := j.moveTo(sp)
		if err != nil {
			j.close()
			sp.Close()
			return nil, fmt.Errorf("store: moving the request log journal to the spool: %w", err)
		}
		if n > 0 {
			w.log.Info("request log: the journal holds records of an earlier run that may not be stored; replaying them",
				zap.Int("records", n))
		}
		w.journal = j
		if sp.Size() > 0 {
			w.log.Info("request log: spool holds records from an earlier run; replaying them first",
				zap.Int64("bytes", sp.Size()), zap.Int("segments", sp.Segments()))
			w.rs.replaying = true
			w.replayingFlag.Store(true)
		}
	}
	w.rs.groups = make(map[uuid.UUID]int)
	w.rs.timer = time.NewTimer(time.Hour)
	w.rs.timer.Stop()
	return w, nil
}

// Record hands r to the log. It never drops r and returns quickly:
//
//   - with a spool, r is first appended to the journal, grouped with
//     concurrent callers' records (one write, and with spool.SyncBatch one
//     fsync, per group): once Record returns, r survives a crash of the
//     process. The gateway calls Record before it sends the answer's last
//     byte;
//   - if the queue has room, r is queued;
//   - if the queue is full, r is appended to the spool on the caller's
//     goroutine: one write, and with spool.SyncBatch an fsync shared
//     with the other callers doing the same (group commit);
//   - without a spool, or if that append fails, Record blocks until the
//     queue has room. With a spool this happens only when the disk fails.
//
// A zero CreatedAt is set to now, and r's ID is made to carry CreatedAt
// (settleRowID; a zero ID is a new one); an empty UsageSource is stored
// as "none". A record over 256 MiB of text is a dead letter at once.
// After Close has begun, r goes to the spool (replayed by the next
// process); without a spool it is lost, logged and counted (stop calling
// Record before closing the writer).
func (w *Writer) Record(r LogRecord) {
	settleRowID(&r) // before the queue and the spool: replays keep it
	w.enqueued.Add(1)
	if recordBytes(&r) > maxRecordBytes {
		w.deadLetter(&r, errTooLarge)
		return
	}
	w.inflight.Add(1)
	if w.closed.Load() {
		w.inflight.Add(-1)
		w.recordAfterClose(&r)
		return
	}
	if w.journal != nil {
		seq, err := w.journal.append(&r)
		w.journaled(err)
		r.jseq = seq
	}
	select {
	case w.queue <- r:
		w.inflight.Add(-1)
		if len(w.queue) >= w.fullAt {
			select {
			case w.full <- struct{}{}:
			default: // already signalled
			}
		}
		return
	default:
	}
	if w.spool != nil {
		if _, _, err := w.spoolRecords([]LogRecord{r}, nil, nil); err == nil {
			w.overflowed.Add(1)
			w.ackJournal([]LogRecord{r})
			w.inflight.Add(-1)
			return
		}
	}
	w.blocked.Add(1)
	w.queue <- r // a flush in progress keeps receiving until inflight is 0
	w.inflight.Add(-1)
}

func (w *Writer) recordAfterClose(r *LogRecord) {
	if w.spool != nil {
		if _, _, err := w.spoolRecords([]LogRecord{*r}, nil, nil); err == nil {
			return
		}
	}
	w.lost.Add(1)
	w.log.Error("request log: record after Close lost",
		zap.String("request_id", r.RequestID), zap.Stringer("org", r.OrgID))
}

// Admit says whether the log can take the record of one more request
// without blocking: nil, ErrSpoolFull (see its doc), or ErrWriterClosed
// once Close has begun. Call it before forwarding a request; a request it
// refused produces no record.
func (w *Writer) Admit() error {
	if w.closed.Load() {
		return ErrWriterClosed
	}
	if w.spool == nil {
		if len(w.queue) >= cap(w.queue) {
			return ErrSpoolFull
		}
		return nil
	}
	if w.degraded.Load() || w.journalDown.Load() {
		return fmt.Errorf("%w: the spool cannot be written", ErrSpoolFull)
	}
	if w.spool.Size()+w.journal.size() >= w.opts.SpoolMaxBytes {
		return ErrSpoolFull
	}
	return nil
}

// Stats returns the counters; see WriterStats.
func (w *Writer) Stats() WriterStats {
	s := WriterStats{
		Enqueued:      w.enqueued.Load(),
		Overflowed:    w.overflowed.Load(),
		Blocked:       w.blocked.Load(),
		Written:       w.written.Load(),
		Spooled:       w.spooled.Load(),
		Replayed:      w.replayed.Load(),
		Duplicates:    w.duplicates.Load(),
		DeadLetters:   w.deadLetters.Load(),
		Lost:          w.lost.Load(),
		Transactions:  w.transactions.Load(),
		BatchesFailed: w.batchesFailed.Load(),
		QueueDepth:    len(w.queue),
		Replaying:     w.replayingFlag.Load(),
	}
	if w.spool != nil {
		s.SpoolBytes = w.spool.Size()
		s.JournalBytes = w.journal.size()
		s.SpoolCorruptBytes = w.spool.SkippedBytes()
	}
	return s
}

// Run is the writer's one goroutine; the caller owns it. It returns when
// ctx is done or Close is called, after the final flush:
//
//  1. Record stops queueing (later calls go to the spool, see Record), and
//     Run takes everything still queued, waiting for Record calls already
//     under way.
//  2. It writes those records to PostgreSQL (each tenant transaction
//     bounded by WriteTimeout); what PostgreSQL does not take, or all of it
//     while a replay is pending, goes to the spool. Without a working
//     spool it retries PostgreSQL with backoff until the flush's deadline
//     and then counts, logs and reports the rest as lost (ErrRecordsLost).
//  3. It closes the spool. The spool is not replayed during the flush: what
//     it holds is replayed by the next process.
//
// The flush is bounded by Close's ctx when Close stopped Run, and
// otherwise by DrainTimeout (ctx's values are kept, its cancellation is
// not). A transaction under way when ctx ends is finished, not cancelled.
//
// Run returns nil after a complete flush, ErrRecordsLost (wrapped) if
// records were lost, and ErrWriterClosed if it was called twice or after
// Close.
func (w *Writer) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.started {
		w.mu.Unlock()
		return ErrWriterClosed
	}
	w.started = true
	w.mu.Unlock()
	defer close(w.done)

	wctx := context.WithoutCancel(ctx) // writes finish; stop is checked between them
	for !w.step(ctx, wctx) {
	}

	fctx, cancel := context.WithTimeout(wctx, w.opts.DrainTimeout)
	defer cancel()
	select {
	case <-w.stop:
		fctx = w.closeCtx
	default:
	}
	w.runErr = w.flush(fctx)
	return w.runErr
}

// Close stops the writer and flushes it (see Run for exactly what the
// flush does); ctx bounds the flush. If Run is running, Close waits for it
// to return, or for ctx to end; if Run never ran, Close flushes on its own
// goroutine. Close returns the flush's error, or ctx's. It is idempotent;
// a second call waits like the first.
func (w *Writer) Close(ctx context.Context) error {
	w.stopOnce.Do(func() {
		w.closeCtx = ctx
		close(w.stop)
	})
	w.mu.Lock()
	own := !w.started
	w.started = true
	w.mu.Unlock()
	if own {
		w.runErr = w.flush(ctx)
		close(w.done)
		return w.runErr
	}
	select {
	case <-w.done:
		return w.runErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stopping reports whether Run has been asked to stop.
func (w *Writer) stopping(ctx context.Context) bool {
	select {
	case <-w.stop:
		return true
	case <-ctx.Done():
		return true
	default:
		return false
	}
}

// step is one turn of Run's loop. It reports whether Run must stop.
func (w *Writer) step(ctx, wctx context.Context) (stop bool) {
	rs := &w.rs
	if (len(rs.held) > 0 || rs.replaying) && !time.Now().Before(rs.nextTry) {
		if len(rs.held) > 0 {
			w.retryHeld(wctx)
		} else {
			w.replay(ctx, wctx)
		}
		if w.stopping(ctx) {
			return true
		}
	}
	var wake time.Time // zero: no wake-up, wait for records
	if len(rs.held) > 0 || rs.replaying {
		wake = rs.nextTry
		if wake.IsZero() {
			wake = time.Now() // due now: come back at once
		}
	}
	if len(rs.held) > 0 {
		// Take no new work while records are held: the queue, then Record,
		// push back.
		return w.sleepUntil(ctx, wake)
	}
	batch, stop := w.collect(ctx, rs.batch[:0], wake)
	rs.batch = batch
	if len(batch) > 0 {
		w.handle(wctx, batch)
	}
	if !rs.replaying && w.spool != nil && w.spool.Size() > 0 {
		// Record overflowed into the spool: replay it (now, unless
		// PostgreSQL is in backoff).
		w.setReplaying(true)
	}
	return stop
}

func (w *Writer) setReplaying(v bool) {
	w.rs.replaying = v
	w.replayingFlag.Store(v)
}

// collect fills batch from the queue. It waits for the first record, or
// until wake (if not zero), or a stop; then it takes records until the
// batch is full or FlushInterval has passed, woken by the timer or by
// Record's full signal, not by each record.
func (w *Writer) collect(ctx context.Context, batch []LogRecord, wake time.Time) ([]LogRecord, bool) {
	t := w.rs.timer
	var wakeC <-chan time.Time
	if !wake.IsZero() {
		t.Reset(time.Until(wake))
		wakeC = t.C
	}
	select {
	case r := <-w.queue:
		batch = append(batch, r)
	case <-wakeC:
		return batch, false
	case <-ctx.Done():
		t.Stop()
		return batch, true
	case <-w.stop:
		t.Stop()
		return batch, true
	}
	t.Stop()
	batch = w.takeQueued(batch)
	if len(batch) >= w.opts.BatchSize {
		return batch, false
	}
	t.Reset(w.opts.FlushInterval)
	defer t.Stop()
	for len(batch) < w.opts.BatchSize {
		select {
		case <-w.full:
			batch = w.takeQueued(batch)
		case <-t.C:
			return w.takeQueued(batch), false
		case <-ctx.Done():
			return batch, true
		case <-w.stop:
			return batch, true
		}
	}
	return batch, false
}

// takeQueued appends to batch what the queue holds now, up to BatchSize.
func (w *Writer) takeQueued(batch []LogRecord) []LogRecord {
	for len(batch) < w.opts.BatchSize {
		select {
		case r := <-w.queue:
			batch = append(batch, r)
		default:
			return batch
		}
	}
	return batch
}

func (w *Writer) sleepUntil(ctx context.Context, wake time.Time) (stop bool) {
	t := w.rs.timer
	t.Reset(time.Until(wake))
	defer t.Stop()
	select {
	case <-t.C:
		return false
	case <-ctx.Done():
		return true
	case <-w.stop:
		return true
	}
}

// handle places one batch from the queue: in the spool while a replay is
// pending, else in PostgreSQL, and what PostgreSQL did not take in the
// spool; if neither takes it, it is held and retried.
func (w *Writer) handle(ctx context.Context, batch []LogRecord) {
	rs := &w.rs
	if rs.replaying {
		if err := w.spoolBatch(batch); err == nil {
			return
		}
		// The spool fails: durability first, order second.
	}
	rest, err := w.writeDirect(ctx, batch)
	if err == nil {
		w.up()
		return
	}
	w.down(err)
	if w.spool != nil {
		if w.spoolBatch(rest) == nil {
			w.setReplaying(true)
			return
		}
	}
	rs.held = append(rs.held, rest...)
}

// retryHeld tries again to place the held records.
func (w *Writer) retryHeld(ctx context.Context) {
	rs := &w.rs
	if rs.replaying && w.spoolBatch(rs.held) == nil {
		rs.held = rs.held[:0]
		return
	}
	rest, err := w.writeDirect(ctx, rs.held)
	if err == nil {
		rs.held = rs.held[:0]
		w.up()
		return
	}
	rs.held = append(rs.held[:0], rest...) // rest is a filtered view of held
	w.down(err)
	if w.spool != nil && w.spoolBatch(rs.held) == nil {
		rs.held = rs.held[:0]
		w.setReplaying(true)
	}
}

// writeDirect writes recs and returns, on an unavailability error, the
// records not committed (a slice of recs, reordered in place).
func (w *Writer) writeDirect(ctx context.Context, recs []LogRecord) ([]LogRecord, error) {
	done := w.doneSlice(len(recs))
	err := w.writeRecords(ctx, recs, done, &w.written)
	if err == nil {
		w.ackJournal(recs)
		return nil, nil
	}
	w.batchesFailed.Add(1)
	n := 0
	for i := range recs {
		if !done[i] {
			recs[n], recs[i] = recs[i], recs[n]
			n++
		}
	}
	w.ackJournal(recs[n:])
	return recs[:n], err
}

// ackJournal tells the journal that PostgreSQL or the spool holds recs,
// or that they are dead letters.
func (w *Writer) ackJournal(recs []LogRecord) {
	if w.journal != nil && len(recs) > 0 {
		w.journal.ack(recs)
	}
}

// journaled notes the outcome of a journal append. After a failure the
// record is kept in memory only, and Admit refuses new requests
// (ErrSpoolFull) until an append succeeds again.
func (w *Writer) journaled(err error) {
	if err != nil {
		if !w.journalDown.Swap(true) {
			w.log.Error("request log: the journal cannot be written; refusing new requests", zap.Error(err))
		}
		return
	}
	if w.journalDown.Load() && w.journalDown.Swap(false) {
		w.log.Info("request log: the journal is writable again")
	}
}

func (w *Writer) doneSlice(n int) []bool {
	rs := &w.rs
	if cap(rs.done) < n {
		rs.done = make([]bool, n)
	}
	rs.done = rs.done[:n]
	clear(rs.done)
	return rs.done
}

// spoolBatch appends recs to the spool with the writer's scratch buffers.
func (w *Writer) spoolBatch(recs []LogRecord) error {
	if w.spool == nil {
		return errors.New("no spool")
	}
	var err error
	w.rs.enc, w.rs.payloads, err = w.spoolRecords(recs, w.rs.enc, w.rs.payloads)
	if err == nil {
		w.ackJournal(recs)
	}
	return err
}

// spoolRecords encodes recs and appends them to the spool in one call.
func (w *Writer) spoolRecords(recs []LogRecord, enc []byte, payloads [][]byte) ([]byte, [][]byte, error) {
	enc, payloads = enc[:0], payloads[:0]
	ends := make([]int, 0, len(recs))
	for i := range recs {
		enc = AppendLogRecord(enc, &recs[i]) // Record keeps records below spool.MaxPayload
		ends = append(ends, len(enc))
	}
	start := 0
	for _, end := range ends {
		payloads = append(payloads, enc[start:end])
		start = end
	}
	if err := w.spool.Append(payloads...); err != nil {
		if !w.degraded.Swap(true) {
			w.log.Error("request log: the spool cannot be written; holding records in memory", zap.Error(err))
		}
		return enc, payloads, err
	}
	if w.degraded.Swap(false) {
		w.log.Info("request log: the spool is writable again")
	}
	w.spooled.Add(int64(len(payloads)))
	return enc, payloads, nil
}

// spoolQueued moves what the queue holds now into the spool, behind the
// records being replayed, so that a long replay does not fill the queue.
func (w *Writer) spoolQueued() {
	for len(w.queue) > 0 {
		batch := w.takeQueued(w.rs.batch[:0])
		w.rs.batch = batch
		if len(batch) == 0 {
			return
		}
		if err := w.spoolBatch(batch); err != nil {
			w.rs.held = append(w.rs.held, batch...)
			return
		}
	}
}

// down records a failed try: back off (100ms doubling to MaxBackoff, with
// ±20% jitter) and log the transition once.
func (w *Writer) down(err error) {
	rs := &w.rs
	rs.backoff = min(max(rs.backoff*2, minBackoff), w.opts.MaxBackoff)
	jitter := time.Duration(rand.Int64N(int64(rs.backoff)/5+1)) - rs.backoff/10
	rs.nextTry = time.Now().Add(rs.backoff + jitter)
	if !rs.down {
		rs.down = true
		w.log.Warn("request log: PostgreSQL is unavailable; spooling and retrying",
			zap.Bool("spool", w.spool != nil), zap.Error(err))
	} else if ce := w.log.Check(zap.DebugLevel, "request log: PostgreSQL still unavailable"); ce != nil {
		ce.Write(zap.Duration("backoff", rs.backoff), zap.Error(err))
	}
}

func (w *Writer) up() {
	rs := &w.rs
	if rs.down {
		rs.down = false
		w.log.Info("request log: PostgreSQL is available again")
	}
	rs.backoff, rs.nextTry = 0, time.Time{}
	w.degraded.Store(false)
}

var (
	errStopping = errors.New("stopping")
	errTooLarge = errors.New("record larger than 256 MiB")
)

// replay pings PostgreSQL and, if it answers, drains the spool.
func (w *Writer) replay(ctx, wctx context.Context) {
	pctx, cancel := context.WithTimeout(wctx, min(w.opts.WriteTimeout, maxPingTimeout))
	err := w.st.Ping(pctx)
	cancel()
	if err != nil {
		w.down(err)
		return
	}
	before := w.spool.Size()
	err = w.spool.Drain(func(sg spool.Segment) error {
		if w.stopping(ctx) {
			return errStopping
		}
		w.spoolQueued()
		return w.replaySegment(ctx, wctx, sg)
	})
	switch {
	case errors.Is(err, errStopping):
		return
	case err != nil:
		w.down(err)
		return
	}
	w.up()
	if w.spool.Size() == 0 {
		w.setReplaying(false)
		if before > 0 {
			w.log.Info("request log: spool replayed", zap.Int64("bytes", before))
		}
	}
}

// replaySegment commits a segment's records in BatchSize chunks. Records
// already committed or dead-lettered by an earlier, failed try of the same
// segment are skipped, so counters stay exact.
func (w *Writer) replaySegment(ctx, wctx context.Context, sg spool.Segment) error {
	rs := &w.rs
	p := &rs.progress
	if !p.valid || p.seq != sg.Seq || len(p.done) != len(sg.Payloads) {
		p.seq, p.valid = sg.Seq, true
		p.done = append(p.done[:0], make([]bool, len(sg.Payloads))...)
	}
	for start := 0; start < len(sg.Payloads); start += w.opts.BatchSize {
		if start > 0 && w.stopping(ctx) {
			return errStopping
		}
		end := min(start+w.opts.BatchSize, len(sg.Payloads))
		recs, ix := rs.replay[:0], rs.replayIx[:0]
		for i := start; i < end; i++ {
			if p.done[i] {
				continue
			}
			r, err := DecodeLogRecord(sg.Payloads[i])
			if err != nil {
				w.deadLetters.Add(1)
				w.log.Error("request log: dead letter: undecodable spool frame",
					zap.Uint64("segment", sg.Seq), zap.Int("frame", i), zap.Error(err))
				p.done[i] = true
				continue
			}
			// Record settled the id before spooling it; an older version's
			// frame has none (version 1) or one made apart from CreatedAt.
			settleRowID(&r)
			recs, ix = append(recs, r), append(ix, i)
		}
		rs.replay, rs.replayIx = recs, ix
		done := w.doneSlice(len(recs))
		err := w.writeRecords(wctx, recs, done, &w.replayed)
		for k, i := range ix {
			if done[k] {
				p.done[i] = true
			}
		}
		clear(recs) // drop the strings
		if err != nil {
			w.batchesFailed.Add(1)
			return err
		}
	}
	p.valid = false
	return nil
}

// flush is the final flush (see Run).
func (w *Writer) flush(ctx context.Context) error {
	w.closed.Store(true)
	rs := &w.rs
	lost := 0
	if len(rs.held) > 0 {
		held := rs.held
		rs.held = nil
		lost += w.placeFinal(ctx, held)
	}
	for {
		batch := w.takeQueued(rs.batch[:0])
		rs.batch = batch
		if len(batch) == 0 {
			// Record calls that saw closed == false finish their send; the
			// queue has room for them now.
			if w.inflight.Load() == 0 && len(w.queue) == 0 {
				break
			}
			time.Sleep(100 * time.Microsecond)
			continue
		}
		lost += w.placeFinal(ctx, batch)
	}
	if w.spool != nil {
		if err := w.spool.Close(); err != nil {
			w.log.Warn("request log: closing the spool", zap.Error(err))
		}
		if err := w.journal.close(); err != nil {
			w.log.Warn("request log: closing the journal", zap.Error(err))
		}
	}
	if lost > 0 {
		return fmt.Errorf("%w: %d records", ErrRecordsLost, lost)
	}
	return nil
}

// placeFinal stores recs in PostgreSQL or the spool, retrying with
// backoff until ctx ends; it returns how many it had to give up.
func (w *Writer) placeFinal(ctx context.Context, recs []LogRecord) (lost int) {
	for {
		if !w.rs.replaying || w.spool == nil {
			rest, err := w.writeDirect(ctx, recs)
			if err == nil {
				w.up()
				return 0
			}
			w.down(err)
			recs = rest
			if w.spool != nil {
				w.setReplaying(true) // the rest of the flush goes to the spool
			}
		}
		if w.spool != nil && w.spoolBatch(recs) == nil {
			return 0
		}
		if w.rs.replaying && w.spool != nil {
			w.setReplaying(false) // the spool fails: try PostgreSQL next
		}
		t := time.NewTimer(time.Until(w.rs.nextTry))
		select {
		case <-t.C:
			continue
		case <-ctx.Done():
			t.Stop()
		}
		for i := range recs {
			if recs[i].jseq != 0 {
				w.log.Warn("request log: record left in the journal at shutdown; the next start replays it",
					zap.String("request_id", recs[i].RequestID), zap.Stringer("org", recs[i].OrgID))
				continue
			}
			lost++
			w.log.Error("request log: record lost at shutdown: neither PostgreSQL nor the spool took it",
				zap.String("request_id", recs[i].RequestID), zap.Stringer("org", recs[i].OrgID))
		}
		w.lost.Add(int64(lost))
		return lost
	}
}

// source counters: written (from the queue) or replayed (from the spool).
type counter = atomic.Int64

// writeRecords writes recs, one transaction per organization in the order
// organizations first appear, and marks done[i] for every record committed
// or dead-lettered. It stops at the first error that is not a refusal of
// the data (PostgreSQL unreachable, timed out, shutting down, ...) and
// returns it; the records of that tenant and of later ones stay not done.
func (w *Writer) writeRecords(ctx context.Context, recs []LogRecord, done []bool, src *counter) error {
	rs := &w.rs
	clear(rs.groups)
	groups, orgs := rs.groupIdx[:0], rs.orgs[:0]
	for i := range recs {
		if done[i] {
			continue
		}
		org := recs[i].OrgID
		if org == uuid.Nil {
			w.deadLetter(&recs[i], ErrNoTenant)
			done[i] = true
			continue
		}
		g, ok := rs.groups[org]
		if !ok {
			g = len(groups)
			rs.groups[org] = g
			orgs = append(orgs, org)
			if len(groups) < cap(groups) {
				groups = groups[:g+1]
				groups[g] = groups[g][:0]
			} else {
				groups = append(groups, nil)
			}
		}
		groups[g] = append(groups[g], i)
	}
	rs.groupIdx, rs.orgs = groups, orgs
	return w.writeGroups(ctx, recs, done, src)
}

// writeGroups writes the tenant groups of rs.orgs and rs.groupIdx, up to
// Concurrency transactions at once (on as many pool connections): their
// commits then share WAL flushes, which is what makes one transaction per
// tenant affordable. The workers are joined before it returns. After the
// first error no worker starts another group; the first error is returned.
func (w *Writer) writeGroups(ctx context.Context, recs []LogRecord, done []bool, src *counter) error {
	rs := &w.rs
	n := len(rs.orgs)
	workers := max(1, min(w.opts.Concurrency, n))
	for len(rs.scratch) < workers {
		rs.scratch = append(rs.scratch, new(scratch))
	}
	if workers == 1 {
		for g, org := range rs.orgs {
			if err := w.writeTenant(ctx, rs.scratch[0], org, recs, rs.groupIdx[g], done, src); err != nil {
				return err
			}
		}
		return nil
	}
	var (
		next     atomic.Int64
		failed   atomic.Bool
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	for k := range workers {
		sc := rs.scratch[k]
		wg.Go(func() {
			for !failed.Load() {
				g := int(next.Add(1) - 1)
				if g >= n {
					return
				}
				if err := w.writeTenant(ctx, sc, rs.orgs[g], recs, rs.groupIdx[g], done, src); err != nil {
					errOnce.Do(func() { firstErr = err })
					failed.Store(true)
					return
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}

// scratch is one tenant-transaction worker's reusable memory.
type scratch struct {
	cols columns
	one  []int
}

// insertSQL writes one tenant's rows as one statement, from one array
// per column. The organization's capture mode is read by the one-row
// sub-select m, in the same transaction and snapshot, so a
// switch to 'metadata' applies to every row written after it commits; a
// missing organization reads as no text (and the references trigger then
// refuses the rows). The arrays are unnested in the select list, which
// PostgreSQL streams; unnest in FROM would first copy every row into a
// tuplestore (measured: 15% more time for 50,000 rows).
//
// Fresh batches from the queue use it as is: their ids were assigned by
// this process and never written. Replays of the spool, which may repeat
// rows an earlier process committed, and the row-by-row retry use
// insertIdempotent. Skipping ON CONFLICT's speculative insertion where
// it cannot apply saved a third of the statement's time in the same
// measurement. Should a fresh batch still meet a committed id (a commit
// whose outcome was lost, then retried), the unique violation sends it to
// the row-by-row retry, which skips the duplicate.
//
// The conflict is named by constraint: prompts_pkey is (organization_id,
// id) up to migration 00007 and (organization_id, created_at, id) from
// 00008, and the ids this version writes are unique under both, so it
// runs on either schema (gateways are upgraded before the migration).
const insertSQL = `INSERT INTO prompts (organization_id, id, request_id, api_key_id, endpoint, model,
	prompt_text, response, prompt_tokens, completion_tokens, usage_tokens, usage_source,
	status, latency_ms, stream, created_at)
SELECT $1::uuid, r.id, r.request_id, r.api_key_id, r.endpoint, r.model,
	CASE WHEN m.full_text THEN r.prompt_text END,
	CASE WHEN m.full_text THEN r.response END,
	r.prompt_tokens, r.completion_tokens, r.usage_tokens, r.usage_source,
	r.status, r.latency_ms, r.stream, r.created_at
FROM (SELECT unnest($2::text[]) AS request_id, unnest($3::uuid[]) AS api_key_id, unnest($4::text[]) AS endpoint,
	unnest($5::text[]) AS model, unnest($6::text[]) AS prompt_text, unnest($7::text[]) AS response,
	unnest($8::int[]) AS prompt_tokens, unnest($9::int[]) AS completion_tokens, unnest($10::int[]) AS usage_tokens,
	unnest($11::text[]) AS usage_source, unnest($12::int[]) AS status, unnest($13::int[]) AS latency_ms,
	unnest($14::bool[]) AS stream, unnest($15::timestamptz[]) AS created_at, unnest($16::uuid[]) AS id) r,
	(SELECT coalesce((SELECT o.capture_mode = 'full' FROM organizations o WHERE o.id = $1::uuid), false) AS full_text) m`

// insertStmt is an insert statement and the name it is prepared under on
// each connection.
type insertStmt struct{ name, sql string }

var (
	insertFresh      = insertStmt{"bulkhead_insert_prompts", insertSQL}
	insertIdempotent = insertStmt{"bulkhead_insert_prompts_idempotent", insertSQL + `
ON CONFLICT ON CONSTRAINT prompts_pkey DO NOTHING`}
)

// columns holds one statement's parameters, one binary array per column
// (see binArray), reused between statements.
type columns struct {
	org    [16]byte
	arrays [15]binArray
	params [16][]byte
}

// The arrays, in the order of insertSQL's $2..$16.
const (
	colRequestID = iota
	colKeyID
	colEndpoint
	colModel
	colPrompt
	colResponse
	colPromptTok
	colComplTok
	colTotalTok
	colUsage
	colStatus
	colLatency
	colStream
	colCreated
	colID
)

var columnOIDs = [15]uint32{oidText, oidUUID, oidText, oidText, oidText, oidText,
	oidInt4, oidInt4, oidInt4, oidText, oidInt4, oidInt4, oidBool, oidTimestamptz, oidUUID}

// binaryFormats: every parameter of insertSQL is sent in binary.
var binaryFormats = []int16{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}

func (c *columns) fill(recs []LogRecord, idx []int) {
	a := &c.arrays
	for i := range a {
		a[i].reset(columnOIDs[i])
	}
	for _, i := range idx {
		r := &recs[i]
		a[colRequestID].text(r.RequestID)
		if r.KeyID == uuid.Nil {
			a[colKeyID].null()
		} else {
			a[colKeyID].uuid(r.KeyID)
		}
		a[colEndpoint].text(r.Endpoint)
		a[colModel].text(r.Model)
		a[colPrompt].text(r.Prompt)
		a[colResponse].text(r.Response)
		a[colPromptTok].int4(clamp32(int64(r.PromptTokens)))
		a[colComplTok].int4(clamp32(int64(r.CompletionTokens)))
		a[colTotalTok].int4(clamp32(int64(r.TotalTokens)))
		us := r.UsageSource
		if us == "" {
			us = "none"
		}
		a[colUsage].text(us)
		a[colStatus].int4(clamp32(int64(r.Status)))
		a[colLatency].int4(clamp32(r.Latency.Milliseconds()))
		a[colStream].bool(r.Stream)
		a[colCreated].timestamptz(r.CreatedAt)
		a[colID].uuid(r.ID)
	}
}

// exec runs one of the insert statements with the filled columns, as a
// statement prepared once per connection, its parameters sent as they
// are (pgconn), not through pgx's per-value encoding.
func (c *columns) exec(ctx context.Context, tx pgx.Tx, st insertStmt, org uuid.UUID) (pgconn.CommandTag, error) {
	sd, err := tx.Conn().Prepare(ctx, st.name, st.sql) // a map look-up after the first time
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	c.org = org
	c.params[0] = c.org[:]
	for i := range c.arrays {
		c.params[i+1] = c.arrays[i].bytes()
	}
	return tx.Conn().PgConn().ExecPrepared(ctx, sd.Name, c.params[:], binaryFormats, nil).Close()
}

// clear lets go of a buffer a huge statement grew, so that one big record
// does not pin its size in every worker's scratch.
func (c *columns) clear() {
	for i := range c.arrays {
		if cap(c.arrays[i].buf) > 4<<20 {
			c.arrays[i].buf = nil
		}
	}
}

func clamp32(v int64) int32 {
	return int32(min(max(v, math.MinInt32), math.MaxInt32))
}

// writeTenant writes one organization's records (recs[idx]) in one
// transaction; if PostgreSQL refuses the data, it retries them one by one.
func (w *Writer) writeTenant(ctx context.Context, sc *scratch, org uuid.UUID, recs []LogRecord, idx []int, done []bool, src *counter) error {
	cols := &sc.cols
	defer cols.clear()
	st := insertFresh
	if src != &w.written {
		st = insertIdempotent
	}
	cctx, cancel := context.WithTimeout(ctx, w.opts.WriteTimeout)
	defer cancel()
	var affected int64
	err := w.st.InTenant(cctx, org, func(tx pgx.Tx) error {
		affected = 0
		for start := 0; start < len(idx); {
			end := statementEnd(recs, idx, start)
			cols.fill(recs, idx[start:end])
			tag, err := cols.exec(cctx, tx, st, org)
			if err != nil {
				return err
			}
			affected += tag.RowsAffected()
			start = end
		}
		return nil
	})
	if err == nil {
		w.committed(src, len(idx), affected)
		for _, i := range idx {
			done[i] = true
		}
		return nil
	}
	if !refused(err) {
		return err
	}
	w.batchesFailed.Add(1)
	return w.writeOneByOne(ctx, sc, org, recs, idx, done, src)
}

// maxStatementBytes bounds the text one INSERT carries: a tenant's rows
// beyond it go in further statements of the same transaction. PostgreSQL
// refuses messages over 1 GiB and big ones cost memory on both sides; and
// the references trigger's transition table holds a statement's rows,
// which spill to a temporary file past work_mem (4 MB by default): a
// profile of the writer's backend showed 11% of its time in that file's
// writes with 8 MiB statements.
const maxStatementBytes = 2 << 20

// maxRecordBytes is the largest record Record takes, so that every
// record fits in a spool frame (with the encoding's overhead); a bigger
// one is a dead letter at once. The gateway's body and response caps keep
// real records far below it.
const maxRecordBytes = spool.MaxPayload - 4096

// recordBytes approximates the size of a record's row.
func recordBytes(r *LogRecord) int {
	return 96 + len(r.RequestID) + len(r.Endpoint) + len(r.Model) + len(r.Prompt) + len(r.Response) + len(r.UsageSource)
}

// statementEnd returns where the statement that starts at idx[start]
// ends: at least one row, then as many as fit in maxStatementBytes.
func statementEnd(recs []LogRecord, idx []int, start int) int {
	n := recordBytes(&recs[idx[start]])
	end := start + 1
	for end < len(idx) {
		n += recordBytes(&recs[idx[end]])
		if n > maxStatementBytes {
			break
		}
		end++
	}
	return end
}

func (w *Writer) committed(src *counter, n int, affected int64) {
	src.Add(int64(n))
	w.duplicates.Add(int64(n) - affected)
	w.transactions.Add(1)
	w.degraded.Store(false)
}

type rejection struct {
	i   int
	err error
}

// writeOneByOne inserts each record under its own savepoint, in one
// tenant transaction; the records PostgreSQL refuses are dead letters.
func (w *Writer) writeOneByOne(ctx context.Context, sc *scratch, org uuid.UUID, recs []LogRecord, idx []int, done []bool, src *counter) error {
	cols := &sc.cols
	cctx, cancel := context.WithTimeout(ctx, w.opts.WriteTimeout+time.Duration(len(idx))*10*time.Millisecond)
	defer cancel()
	var rejects []rejection
	var affected int64
	err := w.st.InTenant(cctx, org, func(tx pgx.Tx) error {
		rejects, affected = rejects[:0], 0
		for _, i := range idx {
			sc.one = append(sc.one[:0], i)
			cols.fill(recs, sc.one)
			sp, err := tx.Begin(cctx) // SAVEPOINT
			if err != nil {
				return err
			}
			tag, err := cols.exec(cctx, sp, insertIdempotent, org)
			if err != nil {
				if !refused(err) {
					return err
				}
				if rbErr := sp.Rollback(cctx); rbErr != nil { // ROLLBACK TO SAVEPOINT
					return rbErr
				}
				rejects = append(rejects, rejection{i, err})
				continue
			}
			if err := sp.Commit(cctx); err != nil { // RELEASE SAVEPOINT
				return err
			}
			affected += tag.RowsAffected()
		}
		return nil
	})
	if err != nil {
		if !refused(err) {
			return err
		}
		// Refused as a whole although each row passed (not possible with
		// the current schema, which has no deferred constraints): dead
		// letters rather than a writer wedged on this tenant.
		rejects = rejects[:0]
		for _, i := range idx {
			rejects = append(rejects, rejection{i, err})
		}
		affected = 0
	}
	for _, r := range rejects {
		w.deadLetter(&recs[r.i], r.err)
		done[r.i] = true
	}
	if n := len(idx) - len(rejects); n > 0 {
		w.committed(src, n, affected)
	} else {
		w.transactions.Add(1)
	}
	for _, i := range idx {
		done[i] = true
	}
	return nil
}

// deadLetter logs and counts a record PostgreSQL refused. It logs ids and
// the SQLSTATE, never the record's text (nor the error's detail, which
// can quote the row).
func (w *Writer) deadLetter(r *LogRecord, err error) {
	w.deadLetters.Add(1)
	fields := []zap.Field{zap.String("request_id", r.RequestID), zap.Stringer("org", r.OrgID)}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		fields = append(fields, zap.String("sqlstate", pgErr.Code),
			zap.String("constraint", pgErr.ConstraintName), zap.String("reason", pgErr.Message))
	} else {
		fields = append(fields, zap.String("reason", err.Error()))
	}
	w.log.Error("request log: dead letter: PostgreSQL refused the record", fields...)
}

// refused reports whether PostgreSQL refused the data itself (data
// exception, integrity violation, program limit): retrying the same rows
// cannot succeed. Every other error — connection failures, timeouts, a
// server shutting down, missing privileges after a bad deploy — is treated
// as PostgreSQL being unavailable: the records are spooled and retried.
func refused(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || len(pgErr.Code) < 2 {
		return false
	}
	switch pgErr.Code[:2] {
	case "22", "23", "54":
		return true
	}
	return false
}
