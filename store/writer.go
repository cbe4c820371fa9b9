package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
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
	DefaultBatchSize            = 32768                  // records per batch from the queue (and per replay chunk); see BatchSize
	DefaultFlushInterval        = 200 * time.Millisecond // longest a record waits for its batch to fill
	DefaultSpoolMaxBytes  int64 = 1 << 30                // 1 GiB; Admit says ErrSpoolFull at or above it
	DefaultWriteTimeout         = 5 * time.Second        // one transaction of a batch
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
	// write, and the chunk size of a replay; at most half the queue is
	// taken. A batch is written in up to Concurrency transactions, each
	// holding many tenants' rows, one INSERT per tenant: under load every
	// batch is full, and what throughput depends on is the rows per
	// tenant per batch, since every statement has a fixed cost. With
	// 10,000 active tenants, 32,768 gives three rows a statement: 25-26k
	// rows/s against 18-19k with 20,000 (two a statement; one with
	// 5,000, a third less again), BenchmarkWriterTenants over 200,000
	// rows. The chunks' encoding buffers grow with it (~1.2 KB per record
	// in flight). Light
	// load makes batches by FlushInterval, not by size. 0:
	// DefaultBatchSize.
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
	// WriteTimeout bounds each transaction (and each ping before a
	// replay, which is also capped at 2s). 0: DefaultWriteTimeout.
	WriteTimeout time.Duration
	// MaxBackoff caps the wait between tries while PostgreSQL is
	// unavailable (the wait starts at 100ms and doubles, with jitter).
	// 0: DefaultMaxBackoff.
	MaxBackoff time.Duration
	// Concurrency is how many transactions of one batch run at once, each
	// on its own connection of the Store's pool (so keep it below the
	// pool's MaxConns, which the gateway's key look-ups share); each holds
	// a run of tenants with about the same number of records. 1 writes a
	// batch in one transaction. 0: half the pool's MaxConns, at least 1
	// and at most 4.
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
	Transactions int64 // transactions committed (each holds one or more tenants' rows)

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
	st      *Store
	opts    WriterOptions
	log     *zap.Logger
	spool   *spool.Spool // nil without SpoolDir
	lanesMu sync.Mutex
	lanes   map[string]*lane // the database targets' (writer_places.go), under lanesMu
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

	// With the store's TransactionScopedStatements, the names of a
	// transaction's statements (prepareForTx) hold a tag of this writer's
	// own and a sequence number.
	txTag string
	txSeq atomic.Uint64
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

	timer         *time.Timer
	batch         []LogRecord
	done          []bool
	groups        map[uuid.UUID]int
	groupIdx      [][]int
	orgs          []uuid.UUID
	seals         []rowSealer // per organization of orgs (sealing.go)
	scratch       []*scratch  // one per transaction worker
	gs            []int       // group numbers, cut into chunks
	chunkList     [][]int
	partitionsDue time.Time // when maintainPartitions runs next
	enc           []byte
	payloads      [][]byte
	replay        []LogRecord
	replayIx      []int
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
		txTag:  strings.ReplaceAll(uuid.NewString(), "-", "")[:16], // names stay within PostgreSQL's 63 bytes
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
	// Every target's lane now, so that records an earlier run spooled for
	// a target are written without waiting for a new one.
	// The moving lane's too, if an earlier run parked records there
	// (writer_places.go).
	names := st.router.targetNames()
	if w.opts.SpoolDir != "" {
		if _, err := os.Stat(filepath.Join(w.opts.SpoolDir, targetsSpoolDir, heldPlace.Target)); err == nil {
			names = append(names, heldPlace.Target)
		}
	}
	for _, name := range names {
		if _, err := w.laneFor(name); err != nil {
			w.closeLanes()
			return nil, err
		}
	}
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
	// The database targets' spools share the disk and the cap: a long
	// outage of one target ends in 503 for everyone, as a full spool does.
	if w.spool.Size()+w.journal.size()+w.lanesSize() >= w.opts.SpoolMaxBytes {
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
//  2. It writes those records to PostgreSQL (each transaction
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
