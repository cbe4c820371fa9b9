package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/store/spool"
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
	w.closeLanes()
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
