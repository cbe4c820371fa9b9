package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/store/spool"
)

// source counters: written (from the queue) or replayed (from the spool).
type counter = atomic.Int64

// writeRecords writes recs grouped by organization (writeGroups), and
// marks done[i] for every record committed or dead-lettered. It stops at
// the first error that is not a refusal of the data (PostgreSQL
// unreachable, timed out, shutting down, ...) and returns it; the records
// not committed by then stay not done.
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
	if err := w.resolveSeals(ctx); err != nil {
		return err
	}
	// The organizations placed elsewhere than the shared tables first
	// (writer_places.go); then the shared ones, as before.
	placed, err := w.splitPlaced(ctx)
	if err != nil {
		return err
	}
	if err := w.writePlaced(ctx, placed, recs, done, src); err != nil {
		return err
	}
	if len(rs.orgs) == 0 {
		return nil
	}
	return w.writeGroups(ctx, recs, done, src)
}

// writeGroups writes the tenant groups of rs.orgs and rs.groupIdx in up to
// Concurrency transactions at once (on as many pool connections), each
// holding a contiguous run of groups (a chunk) of about the same number of
// records. Within a transaction every group sets the tenant, then inserts
// its rows: the transaction-local setting changes between statements and
// each statement's policies read it afresh, so many tenants share one
// commit while RLS checks every statement. The workers are joined before
// it returns. After the first error no worker starts another chunk; the
// first error is returned.
func (w *Writer) writeGroups(ctx context.Context, recs []LogRecord, done []bool, src *counter) error {
	rs := &w.rs
	chunks := rs.chunks(max(1, w.opts.Concurrency))
	for len(rs.scratch) < len(chunks) {
		rs.scratch = append(rs.scratch, new(scratch))
	}
	if len(chunks) == 1 {
		return w.writeChunk(ctx, rs.scratch[0], chunks[0], recs, done, src)
	}
	var (
		errOnce  sync.Once
		firstErr error
		failed   atomic.Bool
		wg       sync.WaitGroup
	)
	for k, c := range chunks {
		sc := rs.scratch[k]
		wg.Go(func() {
			if failed.Load() {
				return
			}
			if err := w.writeChunk(ctx, sc, c, recs, done, src); err != nil {
				errOnce.Do(func() { firstErr = err })
				failed.Store(true)
			}
		})
	}
	wg.Wait()
	return firstErr
}

// chunks cuts rs.orgs, in organization order, into at most n runs of
// groups with about the same number of records each, as the group numbers
// of each run (rs.gs, reused).
func (rs *runState) chunks(n int) [][]int {
	total := 0
	for _, idx := range rs.groupIdx {
		total += len(idx)
	}
	n = max(1, min(n, len(rs.orgs)))
	if cap(rs.gs) < len(rs.orgs) {
		rs.gs = make([]int, len(rs.orgs))
	}
	gs := rs.gs[:len(rs.orgs)]
	for g := range gs {
		gs[g] = g
	}
	// In organization order: each tenant's statement locks that tenant's
	// rows of usage_hourly (the prompts_rollup trigger, migration 00015)
	// until the commit, so every transaction, on every replica, takes
	// them in one order and two cannot wait for each other.
	slices.SortFunc(gs, func(a, b int) int { return bytes.Compare(rs.orgs[a][:], rs.orgs[b][:]) })
	out := rs.chunkList[:0]
	target, acc, from := (total+n-1)/n, 0, 0
	for k, g := range gs {
		acc += len(rs.groupIdx[g])
		if acc >= target*(len(out)+1) && len(out) < n-1 {
			out = append(out, gs[from:k+1])
			from = k + 1
		}
	}
	if from < len(gs) {
		out = append(out, gs[from:])
	}
	rs.chunkList = out
	return out
}

// writeChunk writes the groups gs in one transaction. When PostgreSQL
// refuses one group's rows, that group is written row by row in a
// transaction of its own (its refused rows become dead letters) and the
// others are tried again without it.
func (w *Writer) writeChunk(ctx context.Context, sc *scratch, gs []int, recs []LogRecord, done []bool, src *counter) error {
	rs := &w.rs
	st := insertFresh // see insertSQL: a unique violation tries again with insertIdempotent
	for len(gs) > 0 {
		affected, bad, err := w.writeTenants(ctx, sc, st, gs, recs)
		if err == nil {
			n := 0
			for _, g := range gs {
				for _, i := range rs.groupIdx[g] {
					done[i] = true
				}
				n += len(rs.groupIdx[g])
			}
			w.committed(src, n, affected)
			return nil
		}
		if st.name == insertFresh.name && isCode(err, "23505") {
			st = insertIdempotent
			continue
		}
		if !refused(err) {
			return err
		}
		w.batchesFailed.Add(1)
		if bad < 0 { // refused at COMMIT: not one group's rows
			for _, g := range gs {
				if err := w.writeOneByOne(ctx, sc, rs.orgs[g], &rs.seals[g], recs, rs.groupIdx[g], done, src); err != nil {
					return err
				}
			}
			return nil
		}
		if err := w.writeOneByOne(ctx, sc, rs.orgs[gs[bad]], &rs.seals[gs[bad]], recs, rs.groupIdx[gs[bad]], done, src); err != nil {
			return err
		}
		// Writes into the chunk's own part of rs.gs: no other worker
		// reads it.
		gs = append(gs[:bad], gs[bad+1:]...)
	}
	return nil
}

// setTenant is the tenant setting, transaction-local, as a statement of
// its own between two tenants' inserts in one transaction. The id travels
// in binary (16 bytes) and is formatted by PostgreSQL.
var setTenant = insertStmt{"bulkhead_set_tenant", "SELECT set_config('" + TenantSetting + "', $1::uuid::text, true)", insertOIDs[:1]}

// pipelineFlushBytes: a chunk's statements are sent as they are encoded,
// every this many bytes, so that PostgreSQL works while the rest is
// encoded; results are read once, after the last.
const pipelineFlushBytes = 1 << 20

// writeTenants writes the groups gs (numbers in rs.orgs and rs.groupIdx)
// in one transaction, as one pipeline: per group the tenant setting, then
// its inserts; COMMIT after the pipeline's results. It returns the rows
// inserted and, on an error, the position in gs of the group whose
// statement failed (-1 if none did).
func (w *Writer) writeTenants(ctx context.Context, sc *scratch, st insertStmt, gs []int, recs []LogRecord) (affected int64, bad int, err error) {
	rs := &w.rs
	cols := &sc.cols
	defer cols.clear()
	cctx, cancel := context.WithTimeout(ctx, w.opts.WriteTimeout)
	defer cancel()
	bad = -1
	err = pgx.BeginTxFunc(cctx, w.st.pool, pgx.TxOptions{}, func(tx pgx.Tx) (err error) {
		affected, bad = 0, -1
		conn := tx.Conn()
		setName, insertName := setTenant.name, st.name
		if w.st.txScoped {
			setName, insertName, err = w.prepareForTx(cctx, conn.PgConn(), sc, st)
			defer func() {
				if cerr := closeForTx(cctx, conn.PgConn(), sc); err == nil {
					err = cerr
				}
			}()
			if err != nil {
				return err
			}
		} else {
			if _, err := conn.Prepare(cctx, setTenant.name, setTenant.sql); err != nil { // map look-ups after the first time
				return err
			}
			if _, err := conn.Prepare(cctx, st.name, st.sql); err != nil {
				return err
			}
		}
		p := conn.PgConn().StartPipeline(cctx)
		sc.owner = sc.owner[:0]
		queued := 0
		for k, g := range gs {
			sc.org = rs.orgs[g]
			sc.orgParam[0] = sc.org[:]
			p.SendQueryPrepared(setName, sc.orgParam[:], binaryFormats[:1], nil)
			sc.owner = append(sc.owner, -1-k) // a setting: no rows
			idx := rs.groupIdx[g]
			for start := 0; start < len(idx); {
				end := statementEnd(recs, idx, start)
				if err := cols.fill(recs, idx[start:end], &rs.seals[g]); err != nil {
					return err
				}
				p.SendQueryPrepared(insertName, cols.encode(sc.org), binaryFormats, nil)
				sc.owner = append(sc.owner, k)
				for _, i := range idx[start:end] {
					queued += recordBytes(&recs[i])
				}
				if queued >= pipelineFlushBytes {
					if err := p.Flush(); err != nil {
						return err
					}
					queued = 0
				}
				start = end
			}
		}
		if err := p.Sync(); err != nil {
			return err
		}
		n, failed, err := pipelineResults(p, len(sc.owner), func(r int) bool { return sc.owner[r] >= 0 })
		affected = n
		if failed >= 0 {
			k := sc.owner[failed]
			bad = max(k, -1-k)
		}
		return err
	})
	return affected, bad, err
}

// pipelineResults reads the n statements' results of a synced pipeline
// and closes it. It sums the rows affected by the statements that count
// (inserts, not tenant settings) and returns the position of the first
// statement that failed (-1 if none did) with its error; PostgreSQL skips
// the rest up to the sync, which is read past.
func pipelineResults(p *pgconn.Pipeline, n int, counts func(r int) bool) (affected int64, failed int, err error) {
	failed = -1
	for r := range n {
		res, rerr := p.GetResults()
		if rerr == nil {
			rr, ok := res.(*pgconn.ResultReader)
			if !ok {
				rerr = fmt.Errorf("store: pipeline result %T, want a statement's", res)
			} else {
				var tag pgconn.CommandTag
				tag, rerr = rr.Close()
				if counts(r) {
					affected += tag.RowsAffected()
				}
			}
		}
		if rerr != nil {
			err, failed = rerr, r
			break
		}
	}
	if err != nil {
		for {
			res, rerr := p.GetResults()
			if _, ok := res.(*pgconn.PipelineSync); ok || rerr != nil || res == nil {
				break
			}
		}
	}
	if cerr := p.Close(); err == nil {
		err = cerr
	}
	return affected, failed, err
}

// prepareForTx prepares the tenant setting and st for the current
// transaction alone (the store's TransactionScopedStatements), under
// names that no other transaction uses, of this process or another, and
// that closeForTx closes before the transaction ends. A pooler in
// transaction mode keeps a transaction on one server connection, so the
// statements are there for the rest of the transaction, and gone before
// the next one, which may be another client's, gets that connection.
// Sending the INSERT's text with each tenant's rows instead (the
// unnamed statement) has PostgreSQL parse and plan it once per tenant:
// with 10,000 interleaved tenants, 3,400 rows/s against 11,800 prepared
// (BenchmarkWriterTenants, one run); prepared per transaction, as many as
// prepared once per connection.
func (w *Writer) prepareForTx(ctx context.Context, pc *pgconn.PgConn, sc *scratch, st insertStmt) (setName, insertName string, err error) {
	n := w.txSeq.Add(1)
	sc.txNames[0] = fmt.Sprintf("bulkhead_tx_%s_%d_set", w.txTag, n)
	sc.txNames[1] = fmt.Sprintf("bulkhead_tx_%s_%d_insert", w.txTag, n)
	for i, s := range [2]insertStmt{setTenant, st} {
		if _, err := pc.Prepare(ctx, sc.txNames[i], s.sql, s.oids); err != nil {
			return "", "", err
		}
	}
	return sc.txNames[0], sc.txNames[1], nil
}

// closeForTx closes the statements prepareForTx prepared (closing one
// that is not there is no error), also in a failed transaction: the
// protocol's Close is not refused there. Should it not reach
// PostgreSQL, the connection is broken and the pooler drops the server
// connection of an unfinished transaction; its names are this
// transaction's alone in any case.
func closeForTx(ctx context.Context, pc *pgconn.PgConn, sc *scratch) error {
	var first error
	for _, name := range sc.txNames {
		if err := pc.Deallocate(ctx, name); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// scratch is one transaction worker's reusable memory.
type scratch struct {
	cols     columns
	one      []int
	owner    []int // per pipelined statement: its group's position in the chunk, or -1-position for the setting
	org      uuid.UUID
	orgParam [1][]byte
	txNames  [2]string // the statements of the current transaction (prepareForTx)
}

// insertSQL writes one tenant's rows as one statement, from one array
// per column. The organization's capture mode is read by the one-row
// sub-select m, in the same transaction and snapshot, so a
// switch to 'metadata' applies to every row written after it commits; a
// missing organization reads as no text (and the references trigger then
// refuses the rows). So is its sealed flag: a sealed organization's clear
// text is dropped, whatever the writer sent (sealing.go), so that it is
// never stored in clear. The arrays are unnested in the select list, which
// PostgreSQL streams; unnest in FROM would first copy every row into a
// tuplestore (BenchmarkWriterRLS; README, Performance).
//
// Batches use it as is, fresh ones from the queue and replays of the
// spool alike: ON CONFLICT's speculative insertion is skipped where it
// cannot apply (BenchmarkWriterRLS; for replays, BenchmarkWriterSeeded's
// replay ran at 0.73-0.86 of the writer's rate with it). A fresh batch's
// ids were assigned by this process and never written, and a replay's
// records are almost all ones PostgreSQL never took. Should a chunk meet
// a committed id (a commit whose outcome was lost, then retried; a
// journal recovered after a crash, whose records were partly stored), the
// unique violation rolls it back and it is tried again, once, with
// insertIdempotent, which skips the duplicates. The row-by-row retry uses
// insertIdempotent.
//
// The conflict is named by constraint: prompts_pkey is (organization_id,
// id) up to migration 00007 and (organization_id, created_at, id) from
// 00008, and the ids this version writes are unique under both, so it
// runs on either schema (gateways are upgraded before the migration).
const insertSQL = `INSERT INTO prompts (organization_id, id, request_id, api_key_id, endpoint, model,
	prompt_text, response, prompt_tokens, completion_tokens, usage_tokens, usage_source,
	status, latency_ms, stream, created_at, upstream, attempts, cache_creation_tokens, cache_read_tokens,
	prompt_sealed, response_sealed, end_user, cost_micros, input_price_micros, cached_input_price_micros,
	output_price_micros)
SELECT $1::uuid, r.id, r.request_id, r.api_key_id, r.endpoint, r.model,
	CASE WHEN m.full_text AND NOT m.sealed THEN r.prompt_text END,
	CASE WHEN m.full_text AND NOT m.sealed THEN r.response END,
	r.prompt_tokens, r.completion_tokens, r.usage_tokens, r.usage_source,
	r.status, r.latency_ms, r.stream, r.created_at, r.upstream, r.attempts, r.cache_creation_tokens, r.cache_read_tokens,
	CASE WHEN m.full_text THEN r.prompt_sealed END,
	CASE WHEN m.full_text THEN r.response_sealed END,
	r.end_user, r.cost_micros, r.input_price_micros, r.cached_input_price_micros, r.output_price_micros
FROM (SELECT unnest($2::text[]) AS request_id, unnest($3::uuid[]) AS api_key_id, unnest($4::text[]) AS endpoint,
	unnest($5::text[]) AS model, unnest($6::text[]) AS prompt_text, unnest($7::text[]) AS response,
	unnest($8::int[]) AS prompt_tokens, unnest($9::int[]) AS completion_tokens, unnest($10::int[]) AS usage_tokens,
	unnest($11::text[]) AS usage_source, unnest($12::int[]) AS status, unnest($13::int[]) AS latency_ms,
	unnest($14::bool[]) AS stream, unnest($15::timestamptz[]) AS created_at, unnest($16::uuid[]) AS id,
	unnest($17::text[]) AS upstream, unnest($18::int[]) AS attempts,
	unnest($19::int[]) AS cache_creation_tokens, unnest($20::int[]) AS cache_read_tokens,
	unnest($21::bytea[]) AS prompt_sealed, unnest($22::bytea[]) AS response_sealed,
	unnest($23::text[]) AS end_user, unnest($24::int8[]) AS cost_micros, unnest($25::int8[]) AS input_price_micros,
	unnest($26::int8[]) AS cached_input_price_micros, unnest($27::int8[]) AS output_price_micros) r,
	(SELECT coalesce(bool_or(o.capture_mode = 'full'), false) AS full_text, coalesce(bool_or(o.sealed), false) AS sealed
		FROM organizations o WHERE o.id = $1::uuid) m`

// insertStmt is one of the writer's statements: its text, the name it is
// prepared under on each connection, and the types of its parameters
// (sent with the text when it is prepared for one transaction, or runs
// as the unnamed statement).
type insertStmt struct {
	name, sql string
	oids      []uint32
}

var (
	insertFresh      = insertStmt{"bulkhead_insert_prompts", insertSQL, insertOIDs}
	insertIdempotent = insertStmt{"bulkhead_insert_prompts_idempotent", insertSQL + `
ON CONFLICT ON CONSTRAINT prompts_pkey DO NOTHING`, insertOIDs}
)

// insertOIDs are the types of insertSQL's parameters: the organization,
// then an array of each column's type.
var insertOIDs = func() []uint32 {
	arrayOf := map[uint32]uint32{oidBool: 1000, oidBytea: 1001, oidInt4: 1007, oidInt8: 1016, oidText: 1009, oidTimestamptz: 1185, oidUUID: 2951}
	oids := []uint32{oidUUID}
	for _, elem := range columnOIDs {
		oids = append(oids, arrayOf[elem])
	}
	return oids
}()

// columns holds one statement's parameters, one binary array per column
// (see binArray), reused between statements.
type columns struct {
	org    [16]byte
	arrays [len(columnOIDs)]binArray
	params [len(columnOIDs) + 1][]byte
}

// The arrays, in the order of insertSQL's $2..$27.
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
	colUpstream
	colAttempts
	colCacheCreation
	colCacheRead
	colPromptSealed   // sealing.go
	colResponseSealed // sealing.go
	colEndUser
	colCost // NULL, like the prices, for an unpriced request
	colInputPrice
	colCachedInputPrice
	colOutputPrice
)

var columnOIDs = [...]uint32{oidText, oidUUID, oidText, oidText, oidText, oidText,
	oidInt4, oidInt4, oidInt4, oidText, oidInt4, oidInt4, oidBool, oidTimestamptz, oidUUID, oidText, oidInt4, oidInt4, oidInt4, oidBytea, oidBytea,
	oidText, oidInt8, oidInt8, oidInt8, oidInt8}

// binaryFormats: every parameter of insertSQL is sent in binary.
var binaryFormats = func() []int16 {
	f := make([]int16, len(columnOIDs)+1)
	for i := range f {
		f[i] = 1
	}
	return f
}()

// encode returns the parameters of one insert statement for org's filled
// columns, as they are sent (binary, not through pgx's per-value
// encoding); they stay valid until the next fill.
func (c *columns) encode(org uuid.UUID) [][]byte {
	c.org = org
	c.params[0] = c.org[:]
	for i := range c.arrays {
		c.params[i+1] = c.arrays[i].bytes()
	}
	return c.params[:]
}

// exec runs one of the insert statements with the filled columns, as a
// statement prepared once per connection, or (txScoped) as the unnamed
// statement: this is the row-by-row retry, where a statement of the
// transaction's own would be prepared for one row.
func (c *columns) exec(ctx context.Context, tx pgx.Tx, st insertStmt, org uuid.UUID, txScoped bool) (pgconn.CommandTag, error) {
	if txScoped {
		return tx.Conn().PgConn().ExecParams(ctx, st.sql, c.encode(org), st.oids, binaryFormats, nil).Close()
	}
	sd, err := tx.Conn().Prepare(ctx, st.name, st.sql) // a map look-up after the first time
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	return tx.Conn().PgConn().ExecPrepared(ctx, sd.Name, c.encode(org), binaryFormats, nil).Close()
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

// maxStatementBytes bounds the text one INSERT carries: a tenant's rows
// beyond it go in further statements of the same transaction. PostgreSQL
// refuses messages over 1 GiB and big ones cost memory on both sides; and
// the references trigger's transition table holds a statement's rows,
// which spill to a temporary file past work_mem (4 MB by default; seen in
// a profile of the writer's backend, README, Performance).
const maxStatementBytes = 2 << 20

// maxRecordBytes is the largest record Record takes, so that every
// record fits in a spool frame (with the encoding's overhead); a bigger
// one is a dead letter at once. The gateway's body and response caps keep
// real records far below it.
const maxRecordBytes = spool.MaxPayload - 4096

// recordBytes approximates the size of a record's row.
func recordBytes(r *LogRecord) int {
	return 148 + len(r.EndUser) + len(r.Upstream) + len(r.RequestID) + len(r.Endpoint) + len(r.Model) + len(r.Prompt) + len(r.Response) + len(r.UsageSource)
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
func (w *Writer) writeOneByOne(ctx context.Context, sc *scratch, org uuid.UUID, sl *rowSealer, recs []LogRecord, idx []int, done []bool, src *counter) error {
	cols := &sc.cols
	cctx, cancel := context.WithTimeout(ctx, w.opts.WriteTimeout+time.Duration(len(idx))*10*time.Millisecond)
	defer cancel()
	var rejects []rejection
	var affected int64
	err := w.st.InTenant(cctx, org, func(tx pgx.Tx) error {
		rejects, affected = rejects[:0], 0
		for _, i := range idx {
			sc.one = append(sc.one[:0], i)
			if err := cols.fill(recs, sc.one, sl); err != nil {
				return err
			}
			sp, err := tx.Begin(cctx) // SAVEPOINT
			if err != nil {
				return err
			}
			tag, err := cols.exec(cctx, sp, insertIdempotent, org, w.st.txScoped)
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
