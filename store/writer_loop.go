package store

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"go.uber.org/zap"
)

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
	w.drainLanes(wctx)
	var wake time.Time // zero: no wake-up, wait for records
	if len(rs.held) > 0 || rs.replaying {
		wake = rs.nextTry
		if wake.IsZero() {
			wake = time.Now() // due now: come back at once
		}
	}
	if t, ok := w.lanesWake(); ok && (wake.IsZero() || t.Before(wake)) {
		wake = t
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
		clear(batch) // the records' text is not kept alive until the next batch
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
	w.maintainPartitions(ctx)
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
		rs.dropHeld(0)
		return
	}
	rest, err := w.writeDirect(ctx, rs.held)
	if err == nil {
		rs.dropHeld(0)
		w.up()
		return
	}
	rs.dropHeld(copy(rs.held, rest)) // rest is a filtered view of held
	w.down(err)
	if w.spool != nil && w.spoolBatch(rs.held) == nil {
		rs.dropHeld(0)
		w.setReplaying(true)
	}
}

// dropHeld keeps the first n held records and clears the rest, so that
// their text is not kept alive by the slice's spare capacity.
func (rs *runState) dropHeld(n int) {
	clear(rs.held[n:])
	rs.held = rs.held[:n]
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
		err := w.spoolBatch(batch)
		if err != nil {
			w.rs.held = append(w.rs.held, batch...)
		}
		clear(batch)
		if err != nil {
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
