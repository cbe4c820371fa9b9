package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Moving an organization between placements (`bulkhead org move`). The
// state of a move lives on the organization's row (migration 00019:
// move_from, move_to, move_step), so that a move cut short anywhere is
// resumed from its last recorded step (ResumeMove), and each step is
// audited:
//
//	(none) --start--> hold --grace--> copy --copied and verified--> copied
//	       --cut-over--> cleanup --grace, source emptied--> (none)
//
//   - start (audit org.move.start): the destination is prepared (a schema
//     created and migrated, a database target checked and migrated) and
//     found empty of the organization's rows; move_step = hold.
//   - hold: from here until the cut-over the writers park the
//     organization's new records in their spool (the moving lane,
//     writer_places.go) instead of writing them, so that the source stops
//     changing. The move publishes an invalidation (Notify) and waits
//     Grace, which outlasts a writer's cached placement and a write in
//     flight, before it relies on the source being still. Reads still go
//     to the source, which holds every row written.
//   - copy (audit org.move.copy): prompts are copied in batches in
//     (created_at, id) order, each batch verified in the destination
//     (count and checksum of the same key range) in the transaction that
//     inserted it; then each hourly rollup table's rows of the
//     organization replace the destination's (the destination's trigger
//     counted the copied prompts, but the source's rollups also count rows
//     that retention has deleted since: the source's rollups are the
//     truth, and nothing is counted twice), and the daily ones are summed
//     again from them (usage_reroll_org: the destination's days may end at
//     another point than the source's); then every table but the daily
//     ones is verified whole (count and checksum). Copying is idempotent (ON CONFLICT DO NOTHING, the
//     rollups replaced), so a resumed copy starts again from the beginning.
//   - copied (audit org.move.copied, with each table's count and
//     checksum).
//   - cut-over (audit org.move.cutover): in one transaction placement =
//     destination and move_step = cleanup. Reads go to the destination,
//     which holds every row; the parked records drain there; a new
//     record is written there. An instance that has not yet seen the
//     change reads the source, which still holds every row until the
//     cleanup.
//   - cleanup (audit org.move.done): after Grace again (so that no reader
//     is still on the source), the source's rows are deleted (a source
//     schema is dropped), and the move's state is cleared in the same
//     transaction as the audit row.
//
// Reads therefore see every row exactly once at every step: before the
// cut-over from the source only, after it from the destination only (the
// operator's usage report, which reads every place, counts an
// organization's rows only from its placement). Records are never lost:
// while held they are in the gateway's spool, durable before their answer.
//
// A move needs the gateway's spool (spool_dir) to park records; without
// one, a batch holding a held organization's records is held and retried
// like a database outage until the cut-over.

// MoveOptions tune a move.
type MoveOptions struct {
	// Grace is how long the move waits after the hold and after the
	// cut-over before relying on every gateway having seen them: an
	// instance may miss the invalidation, and then re-reads placements
	// every placementTTL. 0: DefaultMoveGrace.
	Grace time.Duration
	// BatchSize is how many prompts rows one copy transaction carries
	// (0: 5,000).
	BatchSize int
	// Notify, if set, tells the running gateways that org's placement
	// changed (the CLI publishes on the auth invalidation channel). Its
	// error is returned with the step's; the grace applies regardless.
	Notify func(ctx context.Context, org uuid.UUID) error
	// Progress, if set, is told each step as it starts.
	Progress func(step string)

	stopAfter string // tests: fail with errMoveStopped once this step is recorded, before it runs
}

// DefaultMoveGrace outlasts a cached placement and a write in flight.
const DefaultMoveGrace = placementTTL + DefaultWriteTimeout + 5*time.Second

// Move errors; each message names the organization.
var (
	ErrMoveInProgress = errors.New("a move is in progress")
	ErrNoMove         = errors.New("no move is in progress")
	ErrSamePlacement  = errors.New("already placed there")
	errMoveStopped    = errors.New("move stopped (test)")
)

// Move steps (organizations.move_step).
const (
	moveHold    = "hold"
	moveCopy    = "copy"
	moveCopied  = "copied"
	moveCleanup = "cleanup"
)

// MoveResult is what a finished move did.
type MoveResult struct {
	From string `json:"from"`
	To   string `json:"to"`
	// Tables are the verified count and checksum of each data table.
	Tables map[string]TableSum `json:"tables"`
}

// TableSum is an organization's rows of one table: how many and a
// checksum of their contents (a sum of row hashes).
type TableSum struct {
	Rows     int64  `json:"rows"`
	Checksum string `json:"checksum"`
}

type moveState struct {
	org      uuid.UUID
	from, to Placement
	step     string
	res      MoveResult
}

// MoveOrg moves organization org's data plane to placement to, while its
// traffic goes on. Nothing is changed when it refuses to start (unknown
// organization or target, the same placement, a move already in
// progress); once started, an error leaves a move that ResumeMove
// finishes.
func (a *Admin) MoveOrg(ctx context.Context, org uuid.UUID, to Placement, o MoveOptions) (MoveResult, error) {
	unlock, err := a.lockMove(ctx, org)
	if err != nil {
		return MoveResult{}, err
	}
	defer unlock()
	st, err := a.readMove(ctx, org)
	if err != nil {
		return MoveResult{}, err
	}
	if st.step != "" {
		return MoveResult{}, fmt.Errorf("moving organization %s: %w (from %s to %s, step %s): finish it with `bulkhead org move %s --resume`", org, ErrMoveInProgress, st.from, st.to, st.step, org)
	}
	if st.from == to {
		return MoveResult{}, fmt.Errorf("moving organization %s: %w (%s)", org, ErrSamePlacement, to)
	}
	if to.Kind == PlaceDatabase {
		if _, err := a.targets.get(to.Target); err != nil {
			return MoveResult{}, fmt.Errorf("moving organization %s: %w", org, err)
		}
	}
	if st.from.Kind == PlaceDatabase {
		if _, err := a.targets.get(st.from.Target); err != nil {
			return MoveResult{}, fmt.Errorf("moving organization %s: its current placement: %w", org, err)
		}
	}
	st.to = to
	if err := a.preparePlace(ctx, org, to); err != nil {
		return MoveResult{}, fmt.Errorf("moving organization %s: preparing %s: %w", org, to, err)
	}
	dst, err := a.openPlace(ctx, org, to)
	if err != nil {
		return MoveResult{}, fmt.Errorf("moving organization %s: %w", org, err)
	}
	n, err := dst.count(ctx, org)
	dst.close()
	if err == nil && n > 0 {
		err = fmt.Errorf("the destination %s already holds %d rows of it (left by an earlier move?): refusing to mix them", to, n)
	}
	if err != nil {
		return MoveResult{}, fmt.Errorf("moving organization %s: %w", org, err)
	}
	err = a.stepTx(ctx, org, "org.move.start", map[string]any{"from": st.from.String(), "to": to.String()},
		`UPDATE organizations SET move_from = $2, move_to = $3, move_step = 'hold' WHERE id = $1 AND move_step IS NULL`,
		st.from.String(), to.String())
	if err != nil {
		return MoveResult{}, err
	}
	st.step = moveHold
	return a.runMove(ctx, st, o)
}

// ResumeMove finishes organization org's move from its last recorded step.
func (a *Admin) ResumeMove(ctx context.Context, org uuid.UUID, o MoveOptions) (MoveResult, error) {
	unlock, err := a.lockMove(ctx, org)
	if err != nil {
		return MoveResult{}, err
	}
	defer unlock()
	st, err := a.readMove(ctx, org)
	if err != nil {
		return MoveResult{}, err
	}
	if st.step == "" {
		return MoveResult{}, fmt.Errorf("resuming the move of organization %s: %w (it is placed %s)", org, ErrNoMove, st.from)
	}
	for _, p := range []Placement{st.from, st.to} {
		if p.Kind == PlaceDatabase {
			if _, err := a.targets.get(p.Target); err != nil {
				return MoveResult{}, fmt.Errorf("resuming the move of organization %s: %w", org, err)
			}
		}
	}
	err = a.inTenant(ctx, org, func(tx pgx.Tx) error {
		return audit(ctx, tx, org, a.actor, "org.move.resume", org.String(), map[string]any{"from": st.from.String(), "to": st.to.String(), "step": st.step})
	})
	if err != nil {
		return MoveResult{}, err
	}
	return a.runMove(ctx, st, o)
}

// lockMove takes the organization's move lock (a session advisory lock in
// the main database) or says that another process is moving it.
func (a *Admin) lockMove(ctx context.Context, org uuid.UUID) (func(), error) {
	conn, err := a.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("moving organization %s: %w", org, err)
	}
	key := "bulkhead.org-move:" + org.String()
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended($1, 0))`, key).Scan(&ok); err != nil {
		conn.Release()
		return nil, fmt.Errorf("moving organization %s: %w", org, err)
	}
	if !ok {
		conn.Release()
		return nil, fmt.Errorf("moving organization %s: %w: another `bulkhead org move` of it is running now", org, ErrMoveInProgress)
	}
	return func() {
		_, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(hashtextextended($1, 0))`, key) // closing the session would release it too
		conn.Release()
	}, nil
}

// readMove reads org's placement and move state.
func (a *Admin) readMove(ctx context.Context, org uuid.UUID) (moveState, error) {
	st := moveState{org: org}
	var placement string
	var from, to, step *string
	err := a.inTenant(ctx, org, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT placement, move_from, move_to, move_step FROM organizations WHERE id = $1`, org).
			Scan(&placement, &from, &to, &step)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return st, fmt.Errorf("moving organization %s: %w", org, ErrNotFound)
	}
	if err != nil {
		return st, fmt.Errorf("moving organization %s: %w", org, classify(err))
	}
	if st.from, err = ParsePlacement(placement); err != nil {
		return st, err
	}
	if step == nil {
		return st, nil
	}
	st.step = *step
	if st.from, err = ParsePlacement(*from); err != nil {
		return st, err
	}
	if st.to, err = ParsePlacement(*to); err != nil {
		return st, err
	}
	return st, nil
}

// stepTx runs one state change of the move (update, with its arguments
// after the organization's id, must change the organization's row) and
// its audit row in one transaction.
func (a *Admin) stepTx(ctx context.Context, org uuid.UUID, action string, details map[string]any, update string, args ...any) error {
	return a.stepTxWith(ctx, org, action, details, nil, update, args...)
}

func (a *Admin) stepTxWith(ctx context.Context, org uuid.UUID, action string, details map[string]any, also func(pgx.Tx) error, update string, args ...any) error {
	err := a.inTenant(ctx, org, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, update, append([]any{org}, args...)...)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			return errMoveRace
		}
		if also != nil {
			if err := also(tx); err != nil {
				return err
			}
		}
		return audit(ctx, tx, org, a.actor, action, org.String(), details)
	})
	if errors.Is(err, errMoveRace) {
		if _, rerr := a.readMove(ctx, org); errors.Is(rerr, ErrNotFound) {
			return fmt.Errorf("moving organization %s: it was deleted during the move: %w", org, ErrNotFound)
		}
		return fmt.Errorf("moving organization %s: its move state changed under it (%s)", org, action)
	}
	if err != nil {
		return fmt.Errorf("moving organization %s: %s: %w", org, action, classify(err))
	}
	return nil
}

var errMoveRace = errors.New("the organization's row did not change")

// runMove takes the move from st.step to its end.
func (a *Admin) runMove(ctx context.Context, st moveState, o MoveOptions) (MoveResult, error) {
	if o.Grace <= 0 {
		o.Grace = DefaultMoveGrace
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 5000
	}
	st.res = MoveResult{From: st.from.String(), To: st.to.String()}
	org := st.org
	progress := func(step string) {
		if o.Progress != nil {
			o.Progress(step)
		}
	}
	stop := func(step string) error {
		if o.stopAfter == step {
			return errMoveStopped
		}
		return nil
	}
	for {
		if err := stop(st.step); err != nil {
			return st.res, err
		}
		switch st.step {
		case moveHold:
			progress("hold: new records parked; waiting " + o.Grace.String() + " for every gateway to see it")
			if err := a.notify(ctx, org, o); err != nil {
				return st.res, err
			}
			if err := sleepCtx(ctx, o.Grace); err != nil {
				return st.res, err
			}
			if err := a.stepTx(ctx, org, "org.move.copy", map[string]any{"from": st.from.String(), "to": st.to.String()},
				`UPDATE organizations SET move_step = 'copy' WHERE id = $1 AND move_step = 'hold'`); err != nil {
				return st.res, err
			}
			st.step = moveCopy
		case moveCopy:
			progress("copy: copying and verifying rows from " + st.from.String() + " to " + st.to.String())
			sums, err := a.copyOrg(ctx, org, st.from, st.to, o.BatchSize)
			if err != nil {
				return st.res, fmt.Errorf("moving organization %s: copying: %w", org, err)
			}
			st.res.Tables = sums
			details := map[string]any{"from": st.from.String(), "to": st.to.String(), "tables": sums}
			if err := a.stepTx(ctx, org, "org.move.copied", details,
				`UPDATE organizations SET move_step = 'copied' WHERE id = $1 AND move_step = 'copy'`); err != nil {
				return st.res, err
			}
			st.step = moveCopied
		case moveCopied:
			progress("cut-over: records and reads go to " + st.to.String())
			if err := a.stepTx(ctx, org, "org.move.cutover", map[string]any{"from": st.from.String(), "to": st.to.String()},
				`UPDATE organizations SET placement = $2, move_step = 'cleanup' WHERE id = $1 AND move_step = 'copied'`, st.to.String()); err != nil {
				return st.res, err
			}
			st.step = moveCleanup
			if err := a.notify(ctx, org, o); err != nil {
				return st.res, err
			}
		case moveCleanup:
			progress("cleanup: waiting " + o.Grace.String() + ", then emptying " + st.from.String())
			if err := sleepCtx(ctx, o.Grace); err != nil {
				return st.res, err
			}
			if err := a.cleanupSource(ctx, org, st); err != nil {
				return st.res, err
			}
			return st.res, nil
		default:
			return st.res, fmt.Errorf("moving organization %s: unknown step %q", org, st.step)
		}
	}
}

func (a *Admin) notify(ctx context.Context, org uuid.UUID, o MoveOptions) error {
	if o.Notify == nil {
		return nil
	}
	if err := o.Notify(ctx, org); err != nil {
		return fmt.Errorf("moving organization %s: telling the gateways (the move goes on after its grace when resumed): %w", org, err)
	}
	return nil
}

// cleanupSource deletes the organization's rows from the source and ends
// the move: a database target's rows first (idempotent), then, in one
// transaction of the main database, the shared tables' rows or the
// source schema, the cleared state and the audit row.
func (a *Admin) cleanupSource(ctx context.Context, org uuid.UUID, st moveState) error {
	src, err := a.openPlace(ctx, org, st.from)
	if err != nil {
		return fmt.Errorf("moving organization %s: %w", org, err)
	}
	defer src.close()
	if st.from.Kind == PlaceDatabase {
		if err := src.deleteAll(ctx, org); err != nil {
			return fmt.Errorf("moving organization %s: emptying %s: %w", org, st.from, err)
		}
	}
	also := func(tx pgx.Tx) error {
		switch st.from.Kind {
		case PlaceSchema:
			return dropSchema(ctx, tx, org)
		case PlaceShared:
			for _, table := range dataTables {
				if _, err := tx.Exec(ctx, `DELETE FROM public.`+table+` WHERE organization_id = $1`, org); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return a.stepTxWith(ctx, org, "org.move.done", map[string]any{"from": st.from.String(), "to": st.to.String()}, also,
		`UPDATE organizations SET move_from = NULL, move_to = NULL, move_step = NULL WHERE id = $1 AND move_step = 'cleanup'`)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// MoveStep is organization org's move step ("" when none is in progress).
func (a *Admin) MoveStep(ctx context.Context, org uuid.UUID) (from, to, step string, err error) {
	st, err := a.readMove(ctx, org)
	if err != nil {
		return "", "", "", err
	}
	if st.step == "" {
		return st.from.String(), "", "", nil
	}
	return st.from.String(), st.to.String(), st.step, nil
}

// quoteCols quotes column names for a statement.
func quoteCols(cols []string) string {
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = pgx.Identifier{c}.Sanitize()
	}
	return strings.Join(q, ", ")
}
