package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/store/spool"
)

// The request log of organizations not in the shared tables (placement
// schema or database:NAME). writeRecords takes their groups out of the
// batch (splitPlaced) and writes each place's in a transaction of its own
// on the place's pool; the shared groups go on as before.
//
// A tenant schema is in the main database: its failures are the main
// database's, handled as before (the whole batch spooled). A database
// target has a lane of its own: while it cannot be reached its records are
// appended to its own spool (SpoolDir/targets/NAME) and count as placed,
// so that the other tenants' records keep flowing; the lane retries with
// its own backoff and drains its spool once the target answers.

// placedGroup is one organization's records of a batch, bound for its place.
type placedGroup struct {
	place   Place
	org     uuid.UUID
	idx     []int
	seal    rowSealer
	capture string // its capture mode (a database target has no organizations table)
}

// lane is the writer's state of one database target.
type lane struct {
	name    string
	spool   *spool.Spool // nil without SpoolDir
	backoff time.Duration
	nextTry time.Time
	down    bool
}

// targetsSpoolDir is where the lanes' spools live, under SpoolDir (the
// main spool ignores directories).
const targetsSpoolDir = "targets"

// heldPlace is the moving lane's: the records of organizations that a
// move holds before its cut-over (move.go) are parked in its spool
// (SpoolDir/targets/moving, a name no target can have: target names
// match targetName, which has no "-") and drained, once the move is cut
// over, to where each organization is then placed. Without SpoolDir they
// cannot be parked, and the batch is held and retried like a database
// outage until the cut-over.
var heldPlace = Place{Target: "-moving", Schema: "public"}

// errHeld: a spooled record's organization is still held by a move.
var errHeld = errors.New("a move holds the organization's records until its cut-over")

// laneFor returns target name's lane, opening its spool at first use.
func (w *Writer) laneFor(name string) (*lane, error) {
	w.lanesMu.Lock()
	defer w.lanesMu.Unlock()
	if l, ok := w.lanes[name]; ok {
		return l, nil
	}
	l := &lane{name: name}
	if w.opts.SpoolDir != "" {
		sp, err := spool.Open(filepath.Join(w.opts.SpoolDir, targetsSpoolDir, name), spool.Options{
			SegmentSize: w.opts.SpoolSegmentSize, Sync: w.opts.Fsync, Log: w.log.Named("spool." + name),
		})
		if err != nil {
			return nil, fmt.Errorf("store: opening the spool of database target %s: %w", name, err)
		}
		l.spool = sp
	}
	if w.lanes == nil {
		w.lanes = map[string]*lane{}
	}
	w.lanes[name] = l
	return l, nil
}

// lanesSize is what the lanes' spools hold, in bytes.
func (w *Writer) lanesSize() int64 {
	w.lanesMu.Lock()
	defer w.lanesMu.Unlock()
	var n int64
	for _, l := range w.lanes {
		if l.spool != nil {
			n += l.spool.Size()
		}
	}
	return n
}

// closeLanes closes the lanes' spools (Writer.Close).
func (w *Writer) closeLanes() {
	w.lanesMu.Lock()
	defer w.lanesMu.Unlock()
	for _, l := range w.lanes {
		if l.spool != nil {
			l.spool.Close()
		}
	}
}

// parking reports whether the lane's records go to its spool now: it is
// in backoff, or its spool holds records that must be written first.
func (l *lane) parking() bool {
	return (l.down && time.Now().Before(l.nextTry)) || (l.spool != nil && l.spool.Size() > 0)
}

func (l *lane) fail(w *Writer, err error) {
	l.backoff = min(max(l.backoff*2, minBackoff), w.opts.MaxBackoff)
	jitter := time.Duration(rand.Int64N(int64(l.backoff)/5+1)) - l.backoff/10
	l.nextTry = time.Now().Add(l.backoff + jitter)
	if !l.down && errors.Is(err, errHeld) {
		l.down = true // not an outage: the move's cut-over is awaited
		w.log.Info("request log: records parked while an organization is moved", zap.Error(err))
	}
	if !l.down {
		l.down = true
		w.log.Warn("request log: a database target is unavailable; spooling its records only",
			zap.String("target", l.name), zap.Error(err))
	}
}

func (l *lane) ok(w *Writer) {
	if l.down {
		w.log.Info("request log: a database target is available again", zap.String("target", l.name))
	}
	l.down, l.backoff, l.nextTry = false, 0, time.Time{}
}

// splitPlaced takes the groups of organizations not in the shared tables
// out of rs.orgs, rs.groupIdx and rs.seals, by place.
func (w *Writer) splitPlaced(ctx context.Context) (map[Place][]placedGroup, error) {
	rs := &w.rs
	if err := w.st.prefetchPlacements(ctx, rs.orgs); err != nil {
		return nil, err
	}
	var placed map[Place][]placedGroup
	n := 0
	for g, org := range rs.orgs {
		e, err := w.st.orgRoute(ctx, org)
		if err != nil {
			return nil, err
		}
		pl, capture := e.p, e.capture
		if e.held {
			// A move holds its records (move.go): parked in the moving
			// lane, written to the destination once it is cut over.
			if placed == nil {
				placed = map[Place][]placedGroup{}
			}
			placed[heldPlace] = append(placed[heldPlace], placedGroup{place: heldPlace, org: org, idx: append([]int(nil), rs.groupIdx[g]...), seal: rs.seals[g], capture: capture})
			continue
		}
		if pl.Kind == PlaceShared {
			rs.orgs[n], rs.seals[n] = org, rs.seals[g]
			rs.groupIdx[n], rs.groupIdx[g] = rs.groupIdx[g], rs.groupIdx[n]
			n++
			continue
		}
		if placed == nil {
			placed = map[Place][]placedGroup{}
		}
		p := PlaceOf(org, pl)
		placed[p] = append(placed[p], placedGroup{place: p, org: org, idx: append([]int(nil), rs.groupIdx[g]...), seal: rs.seals[g], capture: capture})
	}
	rs.orgs, rs.seals, rs.groupIdx = rs.orgs[:n], rs.seals[:n], rs.groupIdx[:n]
	for org := range rs.groups {
		delete(rs.groups, org)
	}
	for g, org := range rs.orgs {
		rs.groups[org] = g
	}
	return placed, nil
}

// writePlaced writes the placed groups, place by place in a fixed order.
// A tenant schema's failure is returned (the main database's); a
// database target's unavailability parks its records in its lane.
func (w *Writer) writePlaced(ctx context.Context, placed map[Place][]placedGroup, recs []LogRecord, done []bool, src *counter) error {
	places := make([]Place, 0, len(placed))
	for p := range placed {
		places = append(places, p)
	}
	sort.Slice(places, func(i, j int) bool { return places[i].String() < places[j].String() })
	// Every tenant schema is in the main database: one transaction for
	// all of them (BenchmarkWriterPlacement), in schema order.
	var main []placedGroup
	for _, p := range places {
		if p.Target == "" {
			main = append(main, placed[p]...)
		}
	}
	if len(main) > 0 {
		if err := w.writePlace(ctx, w.st.pool, main, recs, done, src); err != nil {
			return err
		}
	}
	for _, p := range places {
		groups := placed[p]
		if p.Target == "" {
			continue
		}
		l, err := w.laneFor(p.Target)
		if err != nil {
			return err
		}
		if p != heldPlace && !l.parking() {
			pool, err := w.st.poolFor(ctx, p)
			if err == nil {
				err = w.writePlace(ctx, pool, groups, recs, done, src)
			}
			if err == nil {
				l.ok(w)
				continue
			}
			l.fail(w, err)
		}
		if err := w.park(l, groups, recs, done); err != nil {
			return err
		}
	}
	return nil
}

// park appends the groups' records not yet done to the lane's spool and
// marks them done; without a spool it fails, and the records take the
// main path's (held, retried).
func (w *Writer) park(l *lane, groups []placedGroup, recs []LogRecord, done []bool) error {
	if l.spool == nil {
		return fmt.Errorf("database target %s is unavailable and there is no spool", l.name)
	}
	var parked []LogRecord
	var ix []int
	for _, g := range groups {
		for _, i := range g.idx {
			if !done[i] {
				parked, ix = append(parked, recs[i]), append(ix, i)
			}
		}
	}
	if len(parked) == 0 {
		return nil
	}
	sp := w.spool
	w.spool = l.spool // spoolRecords appends to w.spool
	_, _, err := w.spoolRecords(parked, nil, nil)
	w.spool = sp
	if err != nil {
		return err
	}
	for _, i := range ix {
		done[i] = true
	}
	return nil
}

// writePlace writes groups (each into its own place, all reached through
// pool) in one transaction, as one pipeline: per group the tenant setting,
// then its rows (BenchmarkWriterPlacement). Each place's insert is
// prepared once per connection, as the shared tables' is (a tenant
// schema's tables are its own: one statement per schema), except with
// TransactionScopedStatements, where it goes as the unnamed statement.
// Rows a group's statement refuses are retried one by one (dead letters).
func (w *Writer) writePlace(ctx context.Context, pool *pgxpool.Pool, groups []placedGroup, recs []LogRecord, done []bool, src *counter) error {
	sc := new(scratch)
	cctx, cancel := context.WithTimeout(ctx, w.opts.WriteTimeout)
	defer cancel()
	fresh := src == &w.written
	var affected int64
	n := 0
	err := pgx.BeginTxFunc(cctx, pool, pgx.TxOptions{}, func(tx pgx.Tx) error {
		affected, n = 0, 0
		conn := tx.Conn()
		prepared := !w.st.txScoped
		if prepared {
			if _, err := conn.Prepare(cctx, setTenant.name, setTenant.sql); err != nil {
				return err
			}
			for i, g := range groups {
				if i > 0 && g.place == groups[i-1].place {
					continue
				}
				if _, err := conn.Prepare(cctx, placedStmtName(g.place, !fresh), placedInsertSQL(g.place, !fresh)); err != nil {
					return err
				}
			}
		}
		pl := conn.PgConn().StartPipeline(cctx)
		queued := 0
		for _, g := range groups {
			org := g.org
			sc.orgParam[0] = org[:]
			if prepared {
				pl.SendQueryPrepared(setTenant.name, sc.orgParam[:], binaryFormats[:1], nil)
			} else {
				pl.SendQueryParams(setTenant.sql, sc.orgParam[:], setTenant.oids, binaryFormats[:1], nil)
			}
			if err := sc.cols.fill(recs, g.idx, &g.seal); err != nil {
				return err
			}
			p := g.place
			if prepared {
				pl.SendQueryPrepared(placedStmtName(p, !fresh), placedParams(&sc.cols, g, p), placedFormats(p), nil)
			} else {
				pl.SendQueryParams(placedInsertSQL(p, !fresh), placedParams(&sc.cols, g, p), placedOIDs(p), placedFormats(p), nil)
			}
			n += len(g.idx)
			for _, i := range g.idx {
				queued += recordBytes(&recs[i])
			}
			if queued >= pipelineFlushBytes {
				if err := pl.Flush(); err != nil {
					return err
				}
				queued = 0
			}
		}
		sc.cols.clear()
		if err := pl.Sync(); err != nil {
			return err
		}
		var err error
		affected, _, err = pipelineResults(pl, 2*len(groups), func(r int) bool { return r%2 == 1 }) // setting, insert, ...
		return err
	})
	if err == nil {
		for _, g := range groups {
			for _, i := range g.idx {
				done[i] = true
			}
		}
		w.committed(src, n, affected)
		return nil
	}
	if !refused(err) && !placeGone(err) {
		return err
	}
	w.batchesFailed.Add(1)
	// One group's rows were refused: each group row by row, in its own
	// transaction (idempotent: nothing of the failed one was committed).
	for _, g := range groups {
		p, rsql := g.place, placedInsertSQL(g.place, true)
		for _, i := range g.idx {
			sc.one = append(sc.one[:0], i)
			if err := sc.cols.fill(recs, sc.one, &g.seal); err != nil {
				return err
			}
			err := beginTenant(cctx, pool, "BEGIN", g.org, "", func(tx pgx.Tx) error {
				_, err := tx.Conn().PgConn().ExecParams(cctx, rsql, placedParams(&sc.cols, g, p), placedOIDs(p), placedFormats(p), nil).Close()
				return err
			})
			switch {
			case err == nil:
				w.committed(src, 1, 1)
			case refused(err) || placeGone(err):
				w.deadLetter(&recs[i], err)
			default:
				return err
			}
			done[i] = true
		}
	}
	return nil
}

// placeGone reports whether the statement failed because its place is no
// longer there: the tenant schema of an organization deleted while its
// records were on their way (the writer's placement cache outlives it by
// up to placementTTL). Like the shared tables' refusal of an organization
// that does not exist, those records are dead letters; taken for an
// outage, they would be retried forever and hold up every tenant's.
func placeGone(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") // undefined_table, invalid_schema_name
}

// placedStmtName is the name under which placedInsertSQL(p, idempotent)
// is prepared on a connection: the place in full (a protocol-level name,
// not an identifier: never cut short), so that no two places share one.
func placedStmtName(p Place, idempotent bool) string {
	if idempotent {
		return "bulkhead_insert_idempotent " + p.Target + "/" + p.Schema
	}
	return "bulkhead_insert " + p.Target + "/" + p.Schema
}

// placedInsertSQL is insertSQL for place p: its schema's prompts; in a
// database target, which has no organizations table, the capture mode
// and seal flag come as the two parameters after insertSQL's (read by the
// writer in the main database, placementOf).
func placedInsertSQL(p Place, idempotent bool) string {
	q := insertSQL
	if p.Target != "" {
		q = targetInsertSQL
	}
	q = strings.Replace(q, "INSERT INTO prompts ", "INSERT INTO "+p.table("prompts")+" ", 1)
	if idempotent {
		q += "\nON CONFLICT ON CONSTRAINT prompts_pkey DO NOTHING"
	}
	return q
}

// targetInsertSQL is insertSQL with its read of organizations (the
// capture mode and seal flag) replaced by the two parameters after
// insertSQL's (insertOIDs). Made at
// start: a change of insertSQL that this does not follow stops every
// test of the package (and the process) at once, rather than a target's
// records at their first write.
var targetInsertSQL = func() string {
	const from = "\t(SELECT coalesce(bool_or(o.capture_mode"
	i := strings.Index(insertSQL, from)
	if i < 0 || !strings.Contains(insertSQL, "INSERT INTO prompts ") {
		panic("store: insertSQL changed: bring targetInsertSQL (writer_places.go) up to date")
	}
	n := len(insertOIDs)
	return insertSQL[:i] + "\t(SELECT $" + strconv.Itoa(n+1) + "::bool AS full_text, $" + strconv.Itoa(n+2) + "::bool AS sealed) m"
}()

var (
	placedTargetOIDs    = append(append([]uint32(nil), insertOIDs...), oidBool, oidBool)
	placedTargetFormats = append(append([]int16(nil), binaryFormats...), 1, 1)
	boolBytes           = [2][]byte{{0}, {1}}
)

func placedOIDs(p Place) []uint32 {
	if p.Target != "" {
		return placedTargetOIDs
	}
	return insertOIDs
}

func placedFormats(p Place) []int16 {
	if p.Target != "" {
		return placedTargetFormats
	}
	return binaryFormats
}

// placedParams are the statement's parameters: the columns, and for a
// database target the organization's capture mode and seal flag.
func placedParams(c *columns, g placedGroup, p Place) [][]byte {
	params := c.encode(g.org)
	if p.Target == "" {
		return params
	}
	full, sealed := 1, 0
	if g.capture == CaptureMetadata {
		full = 0
	}
	if g.seal.s.sealed {
		sealed = 1
	}
	return append(params[:len(params):len(params)], boolBytes[full], boolBytes[sealed])
}

// lanesWake is when the next lane with spooled records is due, if any.
func (w *Writer) lanesWake() (time.Time, bool) {
	var at time.Time
	for _, l := range w.lanes {
		if l.spool == nil || l.spool.Size() == 0 {
			continue
		}
		t := l.nextTry
		if t.IsZero() {
			t = time.Now().Add(minBackoff)
		}
		if at.IsZero() || t.Before(at) {
			at = t
		}
	}
	return at, !at.IsZero()
}

// drainLanes writes the records of each lane's spool whose target is due,
// in order, segment by segment (idempotent, so a segment cut short is
// written again whole).
func (w *Writer) drainLanes(ctx context.Context) {
	for _, l := range w.lanes {
		if l.spool == nil || l.spool.Size() == 0 || time.Now().Before(l.nextTry) {
			continue
		}
		err := l.spool.Drain(func(sg spool.Segment) error { return w.drainSegment(ctx, l, sg) })
		if err != nil {
			l.fail(w, err)
			continue
		}
		l.ok(w)
	}
}

func (w *Writer) drainSegment(ctx context.Context, l *lane, sg spool.Segment) error {
	recs := make([]LogRecord, 0, len(sg.Payloads))
	for i, b := range sg.Payloads {
		r, err := DecodeLogRecord(b)
		if err != nil {
			w.deadLetters.Add(1)
			w.log.Error("request log: dead letter: undecodable spool frame",
				zap.String("target", l.name), zap.Uint64("segment", sg.Seq), zap.Int("frame", i), zap.Error(err))
			continue
		}
		settleRowID(&r)
		recs = append(recs, r)
	}
	done := make([]bool, len(recs))
	byPlace := map[Place][]placedGroup{}
	at := map[uuid.UUID]int{}
	for i := range recs {
		org := recs[i].OrgID
		e, err := w.st.orgRoute(ctx, org)
		if err != nil {
			return err
		}
		if e.held {
			return fmt.Errorf("organization %s: %w", org, errHeld) // the lane retries after its backoff
		}
		pl, capture := e.p, e.capture
		p := PlaceOf(org, pl)
		k, ok := at[org]
		if !ok {
			sl, err := w.sealerFor(ctx, org)
			if err != nil {
				return err
			}
			k = len(byPlace[p])
			at[org] = k
			byPlace[p] = append(byPlace[p], placedGroup{place: p, org: org, seal: sl, capture: capture})
		}
		byPlace[p][k].idx = append(byPlace[p][k].idx, i)
	}
	for p, groups := range byPlace {
		pool, err := w.st.poolFor(ctx, p)
		if err != nil {
			return err
		}
		if err := w.writePlace(ctx, pool, groups, recs, done, &w.replayed); err != nil {
			return err
		}
	}
	return nil
}

// sealerFor is resolveSeals for one organization.
func (w *Writer) sealerFor(ctx context.Context, org uuid.UUID) (rowSealer, error) {
	if w.st.keys.kek == nil {
		return rowSealer{org: org}, nil
	}
	s, ok := w.st.keys.cache.GetIfPresent(org)
	if !ok {
		err := w.st.inTenantRead(ctx, org, func(tx pgx.Tx) (err error) {
			s, err = w.st.keys.lookup(ctx, tx, org)
			return err
		})
		if err != nil {
			return rowSealer{}, fmt.Errorf("store: reading organization %s's data key: %w", org, err)
		}
	}
	if s.sealed && s.err != nil {
		return rowSealer{}, fmt.Errorf("store: organization %s: %w", org, s.err)
	}
	return rowSealer{org: org, s: s}, nil
}
