package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/spool"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// ---- helpers ---------------------------------------------------------------

// newOrgs creates n organizations as the owner and deletes them (and, by
// cascade, their prompts) when the test ends, then vacuums prompts.
func newOrgs(t testing.TB, owner *pgxpool.Pool, n int) []uuid.UUID {
	t.Helper()
	orgs := make([]uuid.UUID, n)
	for i := range orgs {
		orgs[i] = uuid.New()
	}
	ctx := context.Background()
	if _, err := owner.Exec(ctx, `INSERT INTO organizations (id, name) SELECT id, 'writer test' FROM unnest($1::uuid[]) id`, orgs); err != nil {
		t.Fatalf("creating organizations: %v", err)
	}
	t.Cleanup(func() {
		if _, err := owner.Exec(context.Background(), `DELETE FROM organizations WHERE id = ANY($1)`, orgs); err != nil {
			t.Errorf("deleting test organizations: %v", err)
		}
		// The writer tests and the benchmark write hundreds of thousands of
		// rows; reclaim them even where autovacuum is off.
		if _, err := owner.Exec(context.Background(), `VACUUM prompts`); err != nil {
			t.Logf("vacuuming prompts: %v", err)
		}
	})
	return orgs
}

// rec builds the i-th record of a run for org. The request id starts with
// the organization, so a row's organization can be checked against it.
func rec(org uuid.UUID, run string, i int) store.LogRecord {
	now := time.Now()
	return store.LogRecord{
		ID:               store.NewRowID(now),
		OrgID:            org,
		RequestID:        fmt.Sprintf("%s/%s/%d", org, run, i),
		Endpoint:         "/v1/chat/completions",
		Model:            "gpt-4o-mini",
		Prompt:           fmt.Sprintf(`{"messages":[{"role":"user","content":"secret prompt %d"}]}`, i),
		Response:         fmt.Sprintf("secret answer %d", i),
		PromptTokens:     10 + i%7,
		CompletionTokens: 20,
		TotalTokens:      30 + i%7,
		UsageSource:      "upstream",
		Status:           200,
		Latency:          time.Duration(i%500) * time.Millisecond,
		CreatedAt:        now,
	}
}

// countByOrg counts the rows of a run per organization, as the owner
// (bypassing RLS: what is really in the table).
func countByOrg(t testing.TB, owner *pgxpool.Pool, orgs []uuid.UUID, run string) map[uuid.UUID]int {
	t.Helper()
	rows, err := owner.Query(context.Background(),
		`SELECT organization_id, count(*) FROM prompts
		 WHERE organization_id = ANY($1) AND split_part(request_id, '/', 2) = $2 GROUP BY 1`, orgs, run)
	if err != nil {
		t.Fatalf("counting prompts: %v", err)
	}
	got := map[uuid.UUID]int{}
	var org uuid.UUID
	var n int
	if _, err := pgx.ForEachRow(rows, []any{&org, &n}, func() error { got[org] = n; return nil }); err != nil {
		t.Fatalf("counting prompts: %v", err)
	}
	return got
}

func total(m map[uuid.UUID]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// running is a Writer whose Run goroutine the test owns.
type running struct {
	*store.Writer
	cancel context.CancelFunc
	errc   chan error
	once   sync.Once
	err    error
}

func startWriter(t testing.TB, st *store.Store, opts store.WriterOptions) *running {
	t.Helper()
	if opts.Log == nil {
		opts.Log = zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	}
	w, err := store.NewWriter(st, opts)
	if err != nil {
		t.Fatalf("NewWriter: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Writer: w, cancel: cancel, errc: make(chan error, 1)}
	go func() { r.errc <- w.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop closes the writer, waits for Run to return, and returns the
// flush's error.
func (r *running) stop(t testing.TB) error {
	t.Helper()
	r.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r.err = r.Close(ctx)
		select {
		case err := <-r.errc:
			// ErrWriterClosed: Close came before Run started and flushed
			// by itself.
			if r.err == nil && !errors.Is(err, store.ErrWriterClosed) {
				r.err = err
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return after Close")
		}
		r.cancel()
	})
	return r.err
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func segFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// proxiedStore opens an app-role Store whose connections go through a
// fault proxy.
func proxiedStore(t testing.TB) (*store.Store, *storetest.FaultProxy) {
	t.Helper()
	storetest.Migrate(t)
	u, err := url.Parse(storetest.AppDSN())
	if err != nil || u.Host == "" {
		t.Fatalf("the app DSN is not a URL with a host; the outage tests need one")
	}
	p := storetest.NewFaultProxy(t, u.Host)
	u.Host = p.Addr()
	st, err := store.Open(context.Background(), u.String(), store.Options{Lazy: true, MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st, p
}

// ---- tests -------------------------------------------------------------------

// THREATS 15: COPY is refused on an RLS table for the app role, so the
// writer cannot use it.
func TestCopyIntoPromptsRefused(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	org := newOrgs(t, owner, 1)[0]
	ctx := context.Background()
	err := st.InTenant(ctx, org, func(tx pgx.Tx) error {
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"prompts"},
			[]string{"organization_id", "request_id", "model", "status"},
			pgx.CopyFromRows([][]any{{org, "copy-1", "m", 200}}))
		return err
	})
	if !isCode(err, "0A000") { // feature_not_supported: COPY FROM not supported with row-level security
		t.Fatalf("CopyFrom into prompts as the app role: err = %v, want SQLSTATE 0A000", err)
	}
	if n := total(countByOrg(t, owner, []uuid.UUID{org}, "copy-1")); n != 0 {
		t.Errorf("%d rows after a refused COPY", n)
	}
}

// THREATS 15 and 16: 20,000 records of 100 interleaved tenants go through
// the writer; each row lands under its own organization, and no tenant's
// context sees another's rows.
func TestWriterInterleavedTenants(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	const tenants, perTenant = 100, 200
	orgs := newOrgs(t, owner, tenants)
	run := "il" + uuid.NewString()[:8]

	w := startWriter(t, st, store.WriterOptions{SpoolDir: t.TempDir()})
	for i := range tenants * perTenant {
		w.Record(rec(orgs[i%tenants], run, i))
	}
	if err := w.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}

	got := countByOrg(t, owner, orgs, run)
	for _, org := range orgs {
		if got[org] != perTenant {
			t.Errorf("org %s: %d rows, want %d", org, got[org], perTenant)
		}
	}
	var misplaced int
	if err := owner.QueryRow(context.Background(), `SELECT count(*) FROM prompts WHERE organization_id = ANY($1)
		AND split_part(request_id, '/', 1) <> organization_id::text`, orgs).Scan(&misplaced); err != nil {
		t.Fatalf("counting misplaced rows: %v", err)
	}
	if misplaced != 0 {
		t.Errorf("%d rows landed under another organization", misplaced)
	}
	s := w.Stats()
	if s.Enqueued != tenants*perTenant || s.Written != tenants*perTenant || s.DeadLetters != 0 || s.Lost != 0 {
		t.Errorf("stats %+v", s)
	}

	// Tenant B's context sees its own 200 rows and none of A's.
	a, b := orgs[0], orgs[1]
	ctx := context.Background()
	err := st.InTenant(ctx, b, func(tx pgx.Tx) error {
		var all, foreign, ofA int
		if err := tx.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE organization_id <> $1),
			count(*) FILTER (WHERE request_id LIKE $2) FROM prompts`, b, a.String()+"/%").Scan(&all, &foreign, &ofA); err != nil {
			return err
		}
		if all != perTenant || foreign != 0 || ofA != 0 {
			t.Errorf("B's context sees %d rows, %d of other tenants, %d of A's; want %d, 0, 0", all, foreign, ofA, perTenant)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A batch that mixes tenants is written as one transaction when
// Concurrency is 1: the tenant setting changes between the tenants'
// statements, and each statement is checked against its own tenant. The
// middle tenant captures metadata only, so the organization's capture mode
// must be read under each tenant's setting, not the transaction's first;
// and one tenant's key, valid in its own organization, must not pass for
// the others'.
func TestWriterMixedBatchSharesTransaction(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	orgs := newOrgs(t, owner, 3)
	ctx := context.Background()
	if _, err := owner.Exec(ctx, `UPDATE organizations SET capture_mode = 'metadata' WHERE id = $1`, orgs[1]); err != nil {
		t.Fatal(err)
	}
	keyA := uuid.New()
	if _, err := owner.Exec(ctx, `INSERT INTO api_keys (organization_id, id, key_hash, display_prefix, name, rate_limit_per_minute)
		VALUES ($1, $2, $3, 'sk_t', 'writer test', 60)`, orgs[0], keyA, bytes.Repeat([]byte{9}, 32)); err != nil {
		t.Fatal(err)
	}
	run := "mx" + uuid.NewString()[:8]
	core, logs := observer.New(zapcore.WarnLevel)
	w, err := store.NewWriter(st, store.WriterOptions{BatchSize: 31, QueueSize: 64, FlushInterval: time.Hour,
		Concurrency: 1, Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 { // queued before Run: Run takes them as one batch
		r := rec(orgs[i%3], run, i)
		if i%3 == 0 {
			r.KeyID = keyA
		}
		w.Record(r)
	}
	stolen := rec(orgs[2], run, 30) // A's key on C's record
	stolen.KeyID = keyA
	w.Record(stolen)
	errc := make(chan error, 1)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { errc <- w.Run(runCtx) }()
	waitFor(t, 10*time.Second, "the batch", func() bool { s := w.Stats(); return s.Written+s.DeadLetters == 31 })
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if s := w.Stats(); s.Written != 30 || s.DeadLetters != 1 {
		t.Errorf("Written=%d DeadLetters=%d, want 30 and 1 (the stolen key)", s.Written, s.DeadLetters)
	}
	if n := logs.FilterMessageSnippet("dead letter").FilterField(zap.String("request_id", stolen.RequestID)).Len(); n != 1 {
		t.Errorf("%d dead-letter entries for the record with another tenant's key, want 1", n)
	}
	got := countByOrg(t, owner, orgs, run)
	for _, org := range orgs {
		if got[org] != 10 {
			t.Errorf("org %s: %d rows, want 10", org, got[org])
		}
	}
	var withText, misplaced int
	if err := owner.QueryRow(ctx, `SELECT count(*) FILTER (WHERE prompt_text IS NOT NULL),
		count(*) FILTER (WHERE split_part(request_id, '/', 1) <> organization_id::text)
		FROM prompts WHERE organization_id = $1 AND request_id LIKE '%/'||$2||'/%'`, orgs[1], run).Scan(&withText, &misplaced); err != nil {
		t.Fatal(err)
	}
	if withText != 0 || misplaced != 0 {
		t.Errorf("metadata-only tenant: %d rows with text, %d misplaced; want 0, 0", withText, misplaced)
	}
	var fullText int
	if err := owner.QueryRow(ctx, `SELECT count(*) FROM prompts WHERE organization_id = ANY($1)
		AND request_id LIKE '%/'||$2||'/%' AND prompt_text IS NOT NULL`, []uuid.UUID{orgs[0], orgs[2]}, run).Scan(&fullText); err != nil {
		t.Fatal(err)
	}
	if fullText != 20 {
		t.Errorf("full-capture tenants around it: %d rows with text, want 20", fullText)
	}
}

// Every LogRecord field lands in its column; a tenant in 'metadata'
// capture mode gets no prompt or response text.
func TestWriterColumnsAndCaptureMode(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	orgs := newOrgs(t, owner, 2)
	full, meta := orgs[0], orgs[1]
	ctx := context.Background()
	if _, err := owner.Exec(ctx, `UPDATE organizations SET capture_mode = 'metadata' WHERE id = $1`, meta); err != nil {
		t.Fatal(err)
	}
	keyID := uuid.New()
	if _, err := owner.Exec(ctx, `INSERT INTO api_keys (organization_id, id, key_hash, display_prefix, name, rate_limit_per_minute)
		VALUES ($1, $2, $3, 'sk_t', 'writer test', 60)`, full, keyID, bytes.Repeat([]byte{7}, 32)); err != nil {
		t.Fatal(err)
	}
	run := "cm" + uuid.NewString()[:8]
	created := time.Date(2025, 3, 4, 5, 6, 7, 123456000, time.UTC)
	withKey := store.LogRecord{
		OrgID: full, KeyID: keyID, RequestID: full.String() + "/" + run + "/k", Endpoint: "/v1/embeddings",
		Model: "text-embedding-3-small", Prompt: `{"input":"héllo"}`, Response: "ünïcode ✓",
		PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7, UsageSource: "estimated",
		Status: 499, Latency: 1234 * time.Millisecond, Stream: true, CreatedAt: created,
	}
	jwt := withKey
	jwt.KeyID, jwt.RequestID, jwt.UsageSource = uuid.Nil, full.String()+"/"+run+"/jwt", ""
	metaRec := withKey
	metaRec.OrgID, metaRec.KeyID, metaRec.RequestID = meta, uuid.Nil, meta.String()+"/"+run+"/m"

	w := startWriter(t, st, store.WriterOptions{})
	for _, r := range []store.LogRecord{withKey, jwt, metaRec} {
		w.Record(r)
	}
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}

	type row struct {
		Org          uuid.UUID
		KeyID        *uuid.UUID
		Endpoint     string
		Model        string
		Prompt, Resp *string
		PT, CT, UT   int
		UsageSource  string
		Status, Lat  int
		Stream       bool
		Created      time.Time
	}
	read := func(reqID string) row {
		t.Helper()
		var r row
		err := owner.QueryRow(ctx, `SELECT organization_id, api_key_id, endpoint, model, prompt_text, response,
			prompt_tokens, completion_tokens, usage_tokens, usage_source, status, latency_ms, stream, created_at
			FROM prompts WHERE request_id = $1`, reqID).Scan(&r.Org, &r.KeyID, &r.Endpoint, &r.Model, &r.Prompt, &r.Resp,
			&r.PT, &r.CT, &r.UT, &r.UsageSource, &r.Status, &r.Lat, &r.Stream, &r.Created)
		if err != nil {
			t.Fatalf("reading %s: %v", reqID, err)
		}
		return r
	}
	str := func(p *string) string {
		if p == nil {
			return "<NULL>"
		}
		return *p
	}
	cases := []struct {
		name       string
		in         store.LogRecord
		wantKey    *uuid.UUID
		wantPrompt string
		wantResp   string
		wantUsage  string
	}{
		{"full capture, API key", withKey, &keyID, withKey.Prompt, withKey.Response, "estimated"},
		{"full capture, JWT principal (no key), empty usage source", jwt, nil, jwt.Prompt, jwt.Response, "none"},
		{"metadata capture", metaRec, nil, "<NULL>", "<NULL>", "estimated"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := read(c.in.RequestID)
			if r.Org != c.in.OrgID {
				t.Errorf("organization_id = %s, want %s", r.Org, c.in.OrgID)
			}
			if (r.KeyID == nil) != (c.wantKey == nil) || (r.KeyID != nil && *r.KeyID != *c.wantKey) {
				t.Errorf("api_key_id = %v, want %v", r.KeyID, c.wantKey)
			}
			if str(r.Prompt) != c.wantPrompt || str(r.Resp) != c.wantResp {
				t.Errorf("prompt_text, response = %q, %q; want %q, %q", str(r.Prompt), str(r.Resp), c.wantPrompt, c.wantResp)
			}
			if r.Endpoint != c.in.Endpoint || r.Model != c.in.Model || r.PT != 3 || r.CT != 4 || r.UT != 7 ||
				r.UsageSource != c.wantUsage || r.Status != 499 || r.Lat != 1234 || !r.Stream || !r.Created.Equal(created) {
				t.Errorf("row %+v does not match the record %+v", r, c.in)
			}
		})
	}
}

// Rows PostgreSQL refuses do not wedge the writer: the tenant's rows are
// retried one by one, the refused ones are dead letters, logged by
// request id without text, and everything else lands.
func TestWriterDeadLetters(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	orgs := newOrgs(t, owner, 2)
	gone := uuid.New() // an organization that does not exist (deleted)
	run := "dl" + uuid.NewString()[:8]

	core, logs := observer.New(zapcore.InfoLevel)
	w, err := store.NewWriter(st, store.WriterOptions{BatchSize: 100, FlushInterval: 50 * time.Millisecond, Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	var good []store.LogRecord
	for i := range 20 {
		good = append(good, rec(orgs[i%2], run, i))
	}
	negative := rec(orgs[0], run, 100)
	negative.PromptTokens = -1
	noReq := rec(orgs[1], run, 101)
	noReq.RequestID = ""
	badKey := rec(orgs[0], run, 102)
	badKey.KeyID = uuid.New() // no such key: composite foreign key
	orphan := rec(gone, run, 103)
	noOrg := rec(uuid.Nil, run, 104)
	bad := []store.LogRecord{negative, noReq, badKey, orphan, noOrg}

	// One batch: the bad records among the good ones.
	for i, r := range good {
		w.Record(r)
		if i%4 == 0 && len(bad) > 0 {
			w.Record(bad[0])
			bad = bad[1:]
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx) }()
	waitFor(t, 10*time.Second, "the batch", func() bool { s := w.Stats(); return s.Written+s.DeadLetters == 25 })
	// Not wedged: a later record is written.
	later := rec(orgs[0], run, 200)
	w.Record(later)
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}

	s := w.Stats()
	if s.DeadLetters != 5 || s.Written != 21 || s.Lost != 0 {
		t.Errorf("DeadLetters=%d Written=%d Lost=%d, want 5, 21, 0", s.DeadLetters, s.Written, s.Lost)
	}
	if n := total(countByOrg(t, owner, orgs, run)); n != 21 {
		t.Errorf("%d rows, want 21", n)
	}
	dead := logs.FilterMessageSnippet("dead letter")
	if dead.Len() != 5 {
		t.Errorf("%d dead-letter log entries, want 5", dead.Len())
	}
	ids := map[string]bool{}
	for _, e := range dead.All() {
		ids[fmt.Sprint(e.ContextMap()["request_id"])] = true
	}
	for _, r := range []store.LogRecord{negative, noReq, badKey, orphan, noOrg} {
		if !ids[r.RequestID] {
			t.Errorf("no dead-letter entry names request %q", r.RequestID)
		}
	}
	for _, e := range logs.All() {
		line := fmt.Sprint(e.Message, e.ContextMap())
		if strings.Contains(line, "secret") {
			t.Errorf("a log entry carries record text: %s", line)
		}
	}
}

// THREATS 51: PostgreSQL goes away in the middle of a steady stream of
// records and comes back. Every record ends up in the table exactly once,
// the spool is replayed and emptied, and the counters add up.
func TestWriterOutage(t *testing.T) {
	for _, mode := range []string{"refuse", "blackhole"} {
		t.Run(mode, func(t *testing.T) {
			st, proxy := proxiedStore(t)
			owner := storetest.OwnerPool(t)
			orgs := newOrgs(t, owner, 5)
			run := "out" + uuid.NewString()[:8]
			dir := t.TempDir()
			w := startWriter(t, st, store.WriterOptions{
				SpoolDir: dir, SpoolSegmentSize: 64 << 10, FlushInterval: 20 * time.Millisecond,
				WriteTimeout: 500 * time.Millisecond, MaxBackoff: 300 * time.Millisecond,
			})

			const n = 3000
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			var cutAt, restoredAt int
			for i := range n {
				<-tick.C
				switch i {
				case n / 3:
					proxy.Cut(mode)
					cutAt = i
				case n/3 + 1200: // about 1.2 s later
					proxy.Restore()
					restoredAt = i
				}
				w.Record(rec(orgs[i%len(orgs)], run, i))
			}
			waitFor(t, 60*time.Second, "every record committed and the spool emptied", func() bool {
				s := w.Stats()
				return s.Written+s.Replayed == n && s.SpoolBytes == 0 && !s.Replaying
			})
			s := w.Stats()
			t.Logf("cut at record %d, restored at %d; stats %+v", cutAt, restoredAt, s)

			if got := total(countByOrg(t, owner, orgs, run)); got != n {
				t.Errorf("%d rows, want exactly %d", got, n)
			}
			if s.Enqueued != n || s.DeadLetters != 0 || s.Lost != 0 || s.QueueDepth != 0 {
				t.Errorf("stats %+v", s)
			}
			if s.Spooled == 0 || s.Replayed != s.Spooled {
				t.Errorf("Spooled = %d, Replayed = %d: the outage should have spooled records and replayed them all", s.Spooled, s.Replayed)
			}
			if s.BatchesFailed == 0 {
				t.Error("BatchesFailed = 0 across an outage")
			}
			if files := segFiles(t, dir); len(files) != 0 {
				t.Errorf("segments left after the replay: %v", files)
			}
			// Back to direct writes.
			w.Record(rec(orgs[0], run, n))
			waitFor(t, 10*time.Second, "a direct write after the replay", func() bool { return w.Stats().Written+w.Stats().Replayed == n+1 })
			if err := w.stop(t); err != nil {
				t.Fatal(err)
			}
			if after := w.Stats(); after.Spooled != s.Spooled {
				t.Errorf("a record after the replay was spooled (Spooled %d → %d)", s.Spooled, after.Spooled)
			}
		})
	}
}

// THREATS 52 and 54: the writer is closed while PostgreSQL is down, so the
// flush puts the queue in the spool; the process "dies" leaving a torn
// frame; the next writer truncates it and replays every complete record,
// without duplicates.
func TestWriterCloseSpoolsThenRestartReplays(t *testing.T) {
	st, proxy := proxiedStore(t)
	owner := storetest.OwnerPool(t)
	orgs := newOrgs(t, owner, 4)
	run := "rs" + uuid.NewString()[:8]
	dir := t.TempDir()

	proxy.Cut("refuse")
	w1 := startWriter(t, st, store.WriterOptions{SpoolDir: dir, WriteTimeout: 300 * time.Millisecond, FlushInterval: time.Hour})
	const n = 500
	for i := range n {
		w1.Record(rec(orgs[i%4], run, i))
	}
	if err := w1.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	s1 := w1.Stats()
	if s1.Spooled != n || s1.Written != 0 || s1.Lost != 0 {
		t.Fatalf("after closing during the outage: %+v; want all %d spooled", s1, n)
	}
	if got := total(countByOrg(t, owner, orgs, run)); got != 0 {
		t.Fatalf("%d rows written during the outage", got)
	}

	// kill -9 in the middle of an append: a partial frame at the end.
	files := segFiles(t, dir)
	if len(files) == 0 {
		t.Fatal("no spool segment")
	}
	last := files[len(files)-1]
	f, err := os.OpenFile(last, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte{0x40, 0x01, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd, 1, 2, 3})
	f.Close()

	proxy.Restore()
	w2 := startWriter(t, st, store.WriterOptions{SpoolDir: dir})
	waitFor(t, 30*time.Second, "the replay", func() bool { s := w2.Stats(); return s.SpoolBytes == 0 && !s.Replaying })
	if err := w2.stop(t); err != nil {
		t.Fatal(err)
	}
	s2 := w2.Stats()
	if s2.Replayed != n || s2.Duplicates != 0 || s2.DeadLetters != 0 {
		t.Errorf("restart stats %+v; want %d replayed, no duplicates or dead letters", s2, n)
	}
	if got := total(countByOrg(t, owner, orgs, run)); got != n {
		t.Errorf("%d rows after the replay, want %d", got, n)
	}
}

// A fresh batch is written without ON CONFLICT. If it meets an id already
// committed (a retry after a commit whose outcome was lost), the unique
// violation sends it again with ON CONFLICT, which skips the duplicate:
// no dead letter, no second row, and the batch's other rows land.
func TestWriterFreshBatchMeetsCommittedID(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	orgs := newOrgs(t, owner, 1)
	run := "fr" + uuid.NewString()[:8]
	first := rec(orgs[0], run, 0)

	w1 := startWriter(t, st, store.WriterOptions{})
	w1.Record(first)
	if err := w1.stop(t); err != nil {
		t.Fatal(err)
	}
	w2 := startWriter(t, st, store.WriterOptions{})
	w2.Record(rec(orgs[0], run, 1))
	w2.Record(first) // again, same id
	w2.Record(rec(orgs[0], run, 2))
	if err := w2.stop(t); err != nil {
		t.Fatal(err)
	}
	if s := w2.Stats(); s.Written != 3 || s.Duplicates != 1 || s.DeadLetters != 0 || s.BatchesFailed != 0 {
		t.Errorf("stats %+v; want 3 written, 1 duplicate, 0 dead letters, no batch failed (nor sent row by row)", s)
	}
	if got := total(countByOrg(t, owner, orgs, run)); got != 3 {
		t.Errorf("%d rows, want 3", got)
	}
}

// An older version's record (its id made apart from CreatedAt, at the end
// of the request) that an older process committed, and that migration
// 00008 then gave an id carrying its created_at, is met again when the
// older spool replays it: no second row.
func TestWriterOlderRecordMeetsMigratedRow(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	orgs := newOrgs(t, owner, 1)
	run := "old" + uuid.NewString()[:8]
	r := rec(orgs[0], run, 0)
	r.ID = uuid.Must(uuid.NewV7()) // as 00007's gateway made it, after CreatedAt
	if _, err := owner.Exec(context.Background(), `INSERT INTO prompts (organization_id, id, request_id, model, status, created_at)
		VALUES ($1, prompts_row_id($3, $2), $4, $5, 200, $3)`, r.OrgID, r.ID, r.CreatedAt, r.RequestID, r.Model); err != nil {
		t.Fatal(err)
	}
	// The older process's spool, as it wrote it (Record settles ids, so
	// the frame goes in by hand).
	dir := t.TempDir()
	sp, err := spool.Open(dir, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.Append(store.AppendLogRecord(nil, &r)); err != nil {
		t.Fatal(err)
	}
	sp.Close()
	w := startWriter(t, st, store.WriterOptions{SpoolDir: dir})
	waitFor(t, 30*time.Second, "the replay", func() bool { s := w.Stats(); return s.SpoolBytes == 0 && !s.Replaying })
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
	if s := w.Stats(); s.Duplicates != 1 || s.DeadLetters != 0 {
		t.Errorf("stats %+v; want 1 duplicate, 0 dead letters", s)
	}
	if got := total(countByOrg(t, owner, orgs, run)); got != 1 {
		t.Errorf("%d rows, want 1", got)
	}
}

// Replaying records that are already stored, twice over, adds no rows.
func TestWriterReplayIdempotent(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	orgs := newOrgs(t, owner, 3)
	run := "id" + uuid.NewString()[:8]
	const n = 300
	var recs []store.LogRecord
	for i := range n {
		recs = append(recs, rec(orgs[i%3], run, i))
	}

	w1 := startWriter(t, st, store.WriterOptions{})
	for _, r := range recs {
		w1.Record(r)
	}
	if err := w1.stop(t); err != nil {
		t.Fatal(err)
	}

	// The same records, twice, in a spool: as if a crash had come between
	// the commit and the deletion of their segment, twice.
	dir := t.TempDir()
	sp, err := spool.Open(dir, spool.Options{SegmentSize: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		for _, r := range recs {
			if err := sp.Append(store.AppendLogRecord(nil, &r)); err != nil {
				t.Fatal(err)
			}
		}
	}
	sp.Close()

	w2 := startWriter(t, st, store.WriterOptions{SpoolDir: dir})
	waitFor(t, 30*time.Second, "the replay", func() bool { s := w2.Stats(); return s.SpoolBytes == 0 && !s.Replaying })
	if err := w2.stop(t); err != nil {
		t.Fatal(err)
	}
	s := w2.Stats()
	if s.Replayed != 2*n || s.Duplicates != 2*n || s.BatchesFailed != 0 {
		t.Errorf("Replayed = %d, Duplicates = %d, BatchesFailed = %d; want %d, %d and 0", s.Replayed, s.Duplicates, s.BatchesFailed, 2*n, 2*n)
	}
	got := countByOrg(t, owner, orgs, run)
	if total(got) != n {
		t.Errorf("%d rows after replaying everything twice, want %d", total(got), n)
	}
	var dups int
	if err := owner.QueryRow(context.Background(), `SELECT count(*) FROM (SELECT request_id FROM prompts WHERE organization_id = ANY($1)
		GROUP BY organization_id, request_id HAVING count(*) > 1) d`, orgs).Scan(&dups); err != nil {
		t.Fatalf("counting duplicates: %v", err)
	}
	if dups != 0 {
		t.Errorf("%d request ids stored more than once", dups)
	}
	rollupsMatchRows(t, owner, orgs)
}

// THREATS 53: the spool at SpoolMaxBytes turns requests away (Admit), the
// records already accepted are all kept, and a later writer stores them.
func TestWriterAdmitSpoolFull(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	orgs := newOrgs(t, owner, 2)
	run := "af" + uuid.NewString()[:8]
	dir := t.TempDir()

	// Run is not started and the queue holds one record, so everything
	// after the first overflows into the spool.
	w, err := store.NewWriter(st, store.WriterOptions{QueueSize: 1, SpoolDir: dir, SpoolMaxBytes: 2000,
		Log: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))})
	if err != nil {
		t.Fatal(err)
	}
	accepted := 0
	for ; accepted < 1000; accepted++ {
		if err := w.Admit(); err != nil {
			if !errors.Is(err, store.ErrSpoolFull) {
				t.Fatalf("Admit: %v, want ErrSpoolFull", err)
			}
			break
		}
		w.Record(rec(orgs[accepted%2], run, accepted))
	}
	s := w.Stats()
	if accepted == 1000 || s.SpoolBytes+s.JournalBytes < 2000 { // SpoolMaxBytes bounds both
		t.Fatalf("Admit never refused (accepted %d, spool %d + journal %d bytes)", accepted, s.SpoolBytes, s.JournalBytes)
	}
	if s.Overflowed != int64(accepted-1) || s.QueueDepth != 1 || s.Enqueued != int64(accepted) {
		t.Errorf("stats %+v after %d accepted records", s, accepted)
	}
	// Close without Run flushes the queue itself; the spool stays for the
	// next process.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Admit(); !errors.Is(err, store.ErrWriterClosed) {
		t.Errorf("Admit after Close: %v", err)
	}
	if err := w.Run(ctx); !errors.Is(err, store.ErrWriterClosed) {
		t.Errorf("Run after Close: %v", err)
	}

	w2 := startWriter(t, st, store.WriterOptions{SpoolDir: dir})
	waitFor(t, 30*time.Second, "the replay", func() bool { s := w2.Stats(); return s.SpoolBytes == 0 && !s.Replaying })
	if err := w2.Admit(); err != nil {
		t.Errorf("Admit with an empty spool: %v", err)
	}
	if got := total(countByOrg(t, owner, orgs, run)); got != accepted {
		t.Errorf("%d rows, want every one of the %d accepted records", got, accepted)
	}
}

// Without a spool, a full queue makes Admit refuse and Record wait; the
// wait ends when the writer drains the queue.
func TestWriterNoSpoolBlocks(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	orgs := newOrgs(t, owner, 1)
	run := "nb" + uuid.NewString()[:8]
	w, err := store.NewWriter(st, store.WriterOptions{QueueSize: 2, Log: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))})
	if err != nil {
		t.Fatal(err)
	}
	w.Record(rec(orgs[0], run, 0))
	w.Record(rec(orgs[0], run, 1))
	if err := w.Admit(); !errors.Is(err, store.ErrSpoolFull) {
		t.Errorf("Admit with a full queue and no spool: %v, want ErrSpoolFull", err)
	}
	var returned atomic.Bool
	go func() { w.Record(rec(orgs[0], run, 2)); returned.Store(true) }()
	waitFor(t, 5*time.Second, "Record to block", func() bool { return w.Stats().Blocked == 1 })
	time.Sleep(20 * time.Millisecond)
	if returned.Load() {
		t.Fatal("Record returned with a full queue and no spool")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the blocked Record to return", returned.Load)
	if got := total(countByOrg(t, owner, orgs, run)); got != 3 {
		t.Errorf("%d rows, want 3", got)
	}
}

// Without a spool an outage holds the batch in memory and retries it; the
// queue fills and Record waits (never drops). When PostgreSQL returns,
// everything lands.
func TestWriterOutageWithoutSpool(t *testing.T) {
	st, proxy := proxiedStore(t)
	owner := storetest.OwnerPool(t)
	orgs := newOrgs(t, owner, 2)
	run := "ns" + uuid.NewString()[:8]
	w := startWriter(t, st, store.WriterOptions{QueueSize: 10, BatchSize: 10, FlushInterval: 10 * time.Millisecond,
		WriteTimeout: 300 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	proxy.Cut("refuse")
	const n = 60
	var returned atomic.Int64
	go func() {
		for i := range n {
			w.Record(rec(orgs[i%2], run, i))
			returned.Add(1)
		}
	}()
	waitFor(t, 10*time.Second, "Record to block on the full queue", func() bool { return w.Stats().Blocked > 0 })
	if err := w.Admit(); !errors.Is(err, store.ErrSpoolFull) {
		t.Errorf("Admit during the outage with a full queue: %v, want ErrSpoolFull", err)
	}
	if returned.Load() == n {
		t.Fatal("every Record returned during the outage")
	}
	// A full queue alone does not prove the outage was met: on a loaded
	// machine the writer may not have tried a write yet.
	waitFor(t, 10*time.Second, "a write to fail", func() bool { return w.Stats().BatchesFailed > 0 })
	proxy.Restore()
	waitFor(t, 20*time.Second, "every record", func() bool { return w.Stats().Written == n })
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
	if got := total(countByOrg(t, owner, orgs, run)); got != n {
		t.Errorf("%d rows, want %d", got, n)
	}
	if s := w.Stats(); s.BatchesFailed == 0 || s.Spooled != 0 || s.Lost != 0 {
		t.Errorf("stats %+v", s)
	}
}

// Without a spool, a Close during an outage can only wait until its
// deadline: then the records are reported lost, by request id, and
// counted. (With a spool they would be spooled: see
// TestWriterCloseSpoolsThenRestartReplays.)
func TestWriterCloseWithoutSpoolDuringOutage(t *testing.T) {
	st, proxy := proxiedStore(t)
	owner := storetest.OwnerPool(t)
	orgs := newOrgs(t, owner, 1)
	run := "nl" + uuid.NewString()[:8]
	proxy.Cut("refuse")
	core, logs := observer.New(zapcore.ErrorLevel)
	w, err := store.NewWriter(st, store.WriterOptions{WriteTimeout: 200 * time.Millisecond, Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		w.Record(rec(orgs[0], run, i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	err = w.Close(ctx)
	if !errors.Is(err, store.ErrRecordsLost) {
		t.Fatalf("Close: %v, want ErrRecordsLost", err)
	}
	if s := w.Stats(); s.Lost != 5 {
		t.Errorf("Lost = %d, want 5", s.Lost)
	}
	if n := logs.FilterMessageSnippet("lost at shutdown").Len(); n != 5 {
		t.Errorf("%d lost-record log entries, want 5", n)
	}
}

// Close, or cancelling Run's ctx (SIGTERM), flushes everything queued.
func TestWriterStopFlushes(t *testing.T) {
	for _, how := range []string{"Close", "cancel ctx"} {
		t.Run(how, func(t *testing.T) {
			st := storetest.Open(t, store.Options{})
			owner := storetest.OwnerPool(t)
			orgs := newOrgs(t, owner, 7)
			run := "cf" + uuid.NewString()[:8]
			w, err := store.NewWriter(st, store.WriterOptions{BatchSize: 100000, FlushInterval: time.Hour,
				Log: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- w.Run(ctx) }()
			waitFor(t, 5*time.Second, "Run to start", func() bool { return store.StartedForTest(w) })
			const n = 2500
			for i := range n {
				w.Record(rec(orgs[i%7], run, i))
			}
			if s := w.Stats(); s.Written != 0 {
				t.Fatalf("written before the flush: %+v (the test wants a pending batch)", s)
			}
			if how == "Close" {
				cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer ccancel()
				if err := w.Close(cctx); err != nil {
					t.Fatal(err)
				}
			} else {
				cancel()
			}
			if err := <-errc; err != nil {
				t.Fatalf("Run: %v", err)
			}
			if got := total(countByOrg(t, owner, orgs, run)); got != n {
				t.Errorf("%d rows after the flush, want %d", got, n)
			}
			if s := w.Stats(); s.Written != n || s.QueueDepth != 0 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

func TestLogRecordCodec(t *testing.T) {
	full := rec(uuid.New(), "codec", 7)
	full.KeyID, full.Stream, full.CreatedAt = uuid.New(), true, time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	cases := []struct {
		name string
		in   store.LogRecord
	}{
		{"full", full},
		{"zero", store.LogRecord{}},
		{"unicode and NUL", store.LogRecord{OrgID: uuid.New(), RequestID: "r", Prompt: "ü\x00✓", Response: strings.Repeat("z", 100000)}},
		{"negative numbers", store.LogRecord{OrgID: uuid.New(), PromptTokens: -5, Status: -1, Latency: -time.Second}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := store.AppendLogRecord([]byte("prefix"), &c.in)
			if !bytes.HasPrefix(b, []byte("prefix")) {
				t.Fatal("AppendLogRecord overwrote dst")
			}
			got, err := store.DecodeLogRecord(b[len("prefix"):])
			if err != nil {
				t.Fatal(err)
			}
			if got != c.in && !(got.CreatedAt.Equal(c.in.CreatedAt) && sameButTime(got, c.in)) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, c.in)
			}
			for cut := range len(b) - len("prefix") {
				if _, err := store.DecodeLogRecord(b[len("prefix") : len("prefix")+cut]); !errors.Is(err, store.ErrBadRecord) {
					t.Fatalf("decoding %d of %d bytes: err = %v", cut, len(b)-len("prefix"), err)
				}
				if cut > 40 {
					break
				}
			}
		})
	}
	if _, err := store.DecodeLogRecord([]byte{99, 1, 2}); !errors.Is(err, store.ErrBadRecord) {
		t.Errorf("unknown version: err = %v", err)
	}
}

func sameButTime(a, b store.LogRecord) bool {
	a.CreatedAt, b.CreatedAt = time.Time{}, time.Time{}
	return a == b
}

// BenchmarkWriterRLS measures the rows per second the writer sustains
// under RLS: 100 interleaved tenants, ~1 KB prompts. "default" uses the
// default options (BatchSize 20000, 4 transactions in flight on a
// pool of 10); the others change one option to show what it is worth. It
// runs without a spool so that a producer faster than PostgreSQL is paced
// by the queue (Record blocks) rather than diverted to the disk: the figure
// is what reaches PostgreSQL, final flush included. Each runs with
// prepared statements and with TransactionScopedStatements (the first two
// statementModes).
func BenchmarkWriterRLS(b *testing.B) {
	for _, c := range []struct {
		name string
		opts store.WriterOptions
	}{
		{"default", store.WriterOptions{}},
		{"batch=1000", store.WriterOptions{BatchSize: 1000}},
		{"serial", store.WriterOptions{Concurrency: 1}},
	} {
		for _, mode := range statementModes[:2] {
			b.Run(c.name+"/"+mode, func(b *testing.B) { benchWriter(b, c.opts, 100, mode) })
		}
	}
}

// BenchmarkWriterTenants measures the writer's rows per second against
// the number of interleaved active tenants, with the default options
// (and, with 10,000, the batch size before it was raised): with 10,000
// tenants most batches hold one or two rows of each. Each runs in every
// one of statementModes, PgBouncer included.
func BenchmarkWriterTenants(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		for _, mode := range statementModes {
			b.Run("tenants="+strconv.Itoa(n)+"/"+mode, func(b *testing.B) { benchWriter(b, store.WriterOptions{}, n, mode) })
		}
		if n == 10000 {
			b.Run("tenants="+strconv.Itoa(n)+"/batch=5000", func(b *testing.B) { benchWriter(b, store.WriterOptions{BatchSize: 5000}, n, "prepared") })
		}
	}
}

func benchWriter(b *testing.B, opts store.WriterOptions, tenants int, mode string) {
	st := benchStore(b, mode, 10)
	owner := storetest.OwnerPool(b)
	benchWriterOrgs(b, st, opts, newOrgs(b, owner, tenants))
}

// benchWriterOrgs is benchWriter's measurement, on st and the
// organizations orgs.
func benchWriterOrgs(b *testing.B, st *store.Store, opts store.WriterOptions, orgs []uuid.UUID) {
	tenants := len(orgs)
	run := "bn" + uuid.NewString()[:8]
	tmpl := rec(orgs[0], run, 0)
	tmpl.Prompt = `{"messages":[{"role":"user","content":"` + strings.Repeat("lorem ipsum ", 80) + `"}]}` // ~1 KB
	prefixes := make([]string, tenants)
	for i, org := range orgs {
		prefixes[i] = org.String() + "/" + run + "/"
	}
	opts.Log = zap.NewNop()
	w, err := store.NewWriter(st, opts)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx) }()

	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		r := tmpl
		r.ID = uuid.Nil // Record assigns each its own, as for the gateway's records
		r.OrgID = orgs[i%tenants]
		r.RequestID = prefixes[i%tenants] + strconv.Itoa(i)
		w.Record(r)
	}
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer ccancel()
	if err := w.Close(cctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if err := <-errc; err != nil && !errors.Is(err, store.ErrWriterClosed) {
		b.Fatal(err)
	}
	s := w.Stats()
	if s.Written != int64(b.N) || s.Duplicates != 0 || s.Lost != 0 || s.DeadLetters != 0 {
		b.Fatalf("stats %+v after %d records", s, b.N) // a duplicate would be a row not written
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(float64(s.Written)/float64(s.Transactions), "rows/tx")
}

// A caller may send the same x-request-id twice: both requests are
// recorded (replays dedupe on the row id, not the request id).
func TestWriterKeepsRepeatedRequestIDs(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	org := newOrgs(t, owner, 1)[0]
	w := startWriter(t, st, store.WriterOptions{})
	r := rec(org, "dup"+uuid.NewString()[:8], 1)
	r.ID = uuid.Nil
	w.Record(r)
	w.Record(r)
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := owner.QueryRow(context.Background(), `SELECT count(*) FROM prompts WHERE organization_id = $1 AND request_id = $2`, org, r.RequestID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("%d rows for two requests with the same request id, want 2", n)
	}
}

// Spool records written by the version-1 codec (no row id), the
// version-2 one (no upstream, no attempts) and the version-3 one (no end
// user, no cost) still decode.
func TestLogRecordCodecReadsVersion1(t *testing.T) {
	r := rec(uuid.New(), "v1", 7)
	v4 := store.AppendLogRecord(nil, &r)
	v3 := append([]byte{3}, v4[1:len(v4)-5]...) // zero prices and cost, no end user: a 5-byte tail
	if back, err := store.DecodeLogRecord(v3); err != nil || back.ID != r.ID || back.Priced || back.EndUser != "" {
		t.Errorf("version 3: %v, %+v", err, back)
	}
	v2 := append([]byte{2}, v3[1:len(v3)-4]...) // zero attempts and cache counts, no upstream: a 4-byte tail
	v1 := append([]byte{1}, v2[17:]...)         // version 1: no id after the version byte
	got, err := store.DecodeLogRecord(v1)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != uuid.Nil || got.RequestID != r.RequestID || got.OrgID != r.OrgID {
		t.Errorf("decoded %+v", got)
	}
	if back, err := store.DecodeLogRecord(v2); err != nil || back.ID != r.ID {
		t.Errorf("version 2: %v, id %s want %s", err, back.ID, r.ID)
	}
	r.Upstream, r.Attempts, r.CacheCreationTokens, r.CacheReadTokens = "azure-east", 3, 4, 5
	if back, err := store.DecodeLogRecord(store.AppendLogRecord(nil, &r)); err != nil || back.Upstream != "azure-east" || back.Attempts != 3 ||
		back.CacheCreationTokens != 4 || back.CacheReadTokens != 5 {
		t.Errorf("version 3: %v, upstream %q, attempts %d", err, back.Upstream, back.Attempts)
	}
	r.EndUser, r.Priced, r.Prices, r.Cost = "user-7", true, store.Prices{Input: 150_000, CachedInput: 75_000, Output: 600_000}, 42
	if back, err := store.DecodeLogRecord(store.AppendLogRecord(nil, &r)); err != nil || back.EndUser != "user-7" || !back.Priced ||
		back.Prices != r.Prices || back.Cost != 42 {
		t.Errorf("version 4: %v, %+v", err, back)
	}
}

// The upstream that answered and the attempts it took are stored with the
// row and read back by the tenant's read API, by no other tenant.
func TestWriterRecordsUpstreamAndAttempts(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	orgs := newOrgs(t, owner, 2)
	w := startWriter(t, st, store.WriterOptions{})
	r := rec(orgs[0], "up"+uuid.NewString()[:8], 1)
	r.Upstream, r.Attempts, r.CacheCreationTokens, r.CacheReadTokens = "fallback-b", 2, 3, 4
	plain := rec(orgs[0], "up"+uuid.NewString()[:8], 2) // a refused request: no attempt
	w.Record(r)
	w.Record(plain)
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	got, err := st.GetPrompt(ctx, orgs[0], r.ID)
	if err != nil || got.Upstream == nil || *got.Upstream != "fallback-b" || got.Attempts != 2 || got.CacheCreationTokens != 3 || got.CacheReadTokens != 4 {
		t.Fatalf("read back %+v, %v", got, err)
	}
	if got, err := st.GetPrompt(ctx, orgs[0], plain.ID); err != nil || got.Upstream != nil || got.Attempts != 0 {
		t.Errorf("no attempt: %+v, %v", got, err)
	}
	if _, err := st.GetPrompt(ctx, orgs[1], r.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("another tenant read the row: %v", err)
	}
}
