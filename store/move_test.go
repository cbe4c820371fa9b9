package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// placeTotals is an organization's rows in one place: the prompts' count,
// ids and token sum, and the rollups' request and token sums.
type placeTotals struct {
	Rows, Tokens int64
	// Daily and DailyTok are the days as reports read them: from the
	// daily rollups before daily_through, from the hourly ones after.
	Hourly, HourlyTok, Daily, DailyTok, U int64
	IDs                                   map[uuid.UUID]bool
}

// totalsIn reads org's totals in schema of pool, as its owner in org's context.
func totalsIn(t *testing.T, pool *pgxpool.Pool, schema string, org uuid.UUID) placeTotals {
	t.Helper()
	ctx := context.Background()
	tot := placeTotals{IDs: map[uuid.UUID]bool{}}
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('app.current_tenant_id', $1, true)`, org.String()); err != nil {
			return err
		}
		var ok *string
		if err := tx.QueryRow(ctx, `SELECT to_regclass($1)::text`, schema+".prompts").Scan(&ok); err != nil || ok == nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT id, usage_tokens FROM `+schema+`.prompts WHERE organization_id = $1`, org)
		if err != nil {
			return err
		}
		var id uuid.UUID
		var tok int64
		if _, err := pgx.ForEachRow(rows, []any{&id, &tok}, func() error {
			if tot.IDs[id] {
				return fmt.Errorf("id %s twice in %s", id, schema)
			}
			tot.IDs[id] = true
			tot.Rows++
			tot.Tokens += tok
			return nil
		}); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT
			(SELECT coalesce(sum(requests), 0) FROM `+schema+`.usage_hourly WHERE organization_id = $1),
			(SELECT coalesce(sum(usage_tokens), 0) FROM `+schema+`.usage_hourly WHERE organization_id = $1),
			(SELECT coalesce(sum(requests), 0) FROM `+schema+`.usage_daily WHERE organization_id = $1 AND day < (SELECT daily_through FROM `+schema+`.usage_rollup_state)) +
			(SELECT coalesce(sum(requests), 0) FROM `+schema+`.usage_hourly WHERE organization_id = $1 AND hour >= (SELECT daily_through FROM `+schema+`.usage_rollup_state)),
			(SELECT coalesce(sum(usage_tokens), 0) FROM `+schema+`.usage_daily WHERE organization_id = $1 AND day < (SELECT daily_through FROM `+schema+`.usage_rollup_state)) +
			(SELECT coalesce(sum(usage_tokens), 0) FROM `+schema+`.usage_hourly WHERE organization_id = $1 AND hour >= (SELECT daily_through FROM `+schema+`.usage_rollup_state)),
			(SELECT coalesce(sum(requests), 0) FROM `+schema+`.usage_hourly_user WHERE organization_id = $1)`, org).
			Scan(&tot.Hourly, &tot.HourlyTok, &tot.Daily, &tot.DailyTok, &tot.U)
	})
	if err != nil {
		t.Fatalf("reading %s totals of %s: %v", schema, org, err)
	}
	return tot
}

// where is the owner pool and schema of org's place under placement p.
func where(t *testing.T, owner *pgxpool.Pool, org uuid.UUID, p string) (*pgxpool.Pool, string) {
	t.Helper()
	switch {
	case p == store.PlaceShared:
		return owner, "public"
	case p == store.PlaceSchema:
		return owner, store.SchemaName(org)
	}
	return targetOwner(t, strings.TrimPrefix(p, "database:")), "public"
}

func moveOpts() store.MoveOptions {
	return store.MoveOptions{Grace: 400 * time.Millisecond, BatchSize: 37}
}

// A tenant moved shared → schema → database:t1 → shared while the writer
// records its traffic and a reader lists it: nothing is lost or
// duplicated (count, ids, token and rollup sums), the rollups that
// outlived their rows (retention) move with it and nothing is counted
// twice, each source is empty after, the reader never sees a row twice or
// a row disappear, and tenant B never sees A's rows.
func TestMoveUnderLoad(t *testing.T) {
	storetest.Targets(t)
	a := storetest.PlacedAdmin(t)
	owner := storetest.OwnerPool(t)
	ctx := context.Background()
	mk := func(name string) store.Organization {
		o, _, err := a.CreateOrgPlaced(ctx, store.NewOrg{Name: name, Capture: store.CaptureFull}, store.Idempotency{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.DeleteOrg(context.Background(), o.ID) })
		return o
	}
	A, B := mk("move A"), mk("move B")

	st := storetest.Open(t, store.Options{MaxConns: 6})
	st.UseTargets(storetest.Targets(t), store.TargetPoolOptions{})
	store.SetPlacementTTLForTest(st, 100*time.Millisecond)
	// Another gateway that misses the move's invalidations: it re-reads
	// A's placement only when its cache expires, within the move's grace.
	replica := storetest.Open(t, store.Options{MaxConns: 2})
	replica.UseTargets(storetest.Targets(t), store.TargetPoolOptions{})
	store.SetPlacementTTLForTest(replica, 300*time.Millisecond)
	w := startWriter(t, st, store.WriterOptions{SpoolDir: t.TempDir(), FlushInterval: 5 * time.Millisecond,
		WriteTimeout: 2 * time.Second, MaxBackoff: 100 * time.Millisecond})
	run := "move" + uuid.NewString()[:8]

	// History: rows, then a third of them deleted as retention would (their
	// rollups stay, and must move too).
	// A third of the history is yesterday's, so that the daily rollups
	// hold some of it (the rest is read from the hours, as reports do);
	// every record of A's has an end user.
	const history = 120
	for i := range history {
		r := rec(A.ID, run, i)
		if i%3 == 0 {
			r.CreatedAt = r.CreatedAt.Add(-24 * time.Hour)
			r.ID = store.NewRowID(r.CreatedAt)
		}
		r.EndUser = "mover"
		w.Record(r)
		w.Record(rec(B.ID, run, i))
	}
	waitFor(t, 30*time.Second, "the history", func() bool { return countIn(t, owner, "public", A.ID, run) == history })
	err := pgx.BeginFunc(ctx, owner, func(tx pgx.Tx) error {
		tx.Exec(ctx, `SELECT set_config('app.current_tenant_id', $1, true)`, A.ID.String())
		_, err := tx.Exec(ctx, `DELETE FROM public.prompts WHERE organization_id = $1 AND id IN (
			SELECT id FROM public.prompts WHERE organization_id = $1 ORDER BY created_at LIMIT 40)`, A.ID)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	before := totalsIn(t, owner, "public", A.ID)
	if before.Rows != history-40 || before.Hourly != history {
		t.Fatalf("before: %+v", before)
	}

	// Load: A's and B's records flow through every move.
	var sent atomic.Int64
	var tokSent atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := history; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			r := rec(A.ID, run, i)
			r.EndUser = "mover"
			w.Record(r)
			w.Record(rec(B.ID, run, i))
			sent.Add(1)
			tokSent.Add(int64(r.TotalTokens))
		}
	})
	// Readers of A's rows (on both gateways): never a row twice, never
	// fewer rows than before; B's reads never show A's.
	var readErr firstError
	for _, st := range []*store.Store{st, replica} {
		wg.Go(func() {
			last := 0
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				ps, err := st.ListPrompts(ctx, A.ID, store.PromptFilter{Limit: 100000})
				if err != nil {
					readErr.set(err)
					return
				}
				seen := map[uuid.UUID]bool{}
				for _, p := range ps {
					if seen[p.ID] {
						readErr.set(fmt.Errorf("read %s twice", p.ID))
						return
					}
					seen[p.ID] = true
				}
				if len(ps) < last {
					readErr.set(fmt.Errorf("read %d rows after %d", len(ps), last))
					return
				}
				last = len(ps)
				bs, err := st.ListPrompts(ctx, B.ID, store.PromptFilter{Limit: 100000})
				if err != nil {
					readErr.set(err)
					return
				}
				for _, p := range bs {
					if seen[p.ID] {
						readErr.set(fmt.Errorf("B read A's row %s", p.ID))
						return
					}
				}
				if _, err := st.GetPrompt(ctx, B.ID, ps[0].ID); !errors.Is(err, store.ErrNotFound) {
					readErr.set(fmt.Errorf("B's GetPrompt of A's row: %v", err))
					return
				}
			}
		})
	}

	from := store.PlaceShared
	for _, to := range []string{"schema", "database:t1", "shared"} {
		p, err := store.ParsePlacement(to)
		if err != nil {
			t.Fatal(err)
		}
		o := moveOpts()
		o.Notify = func(_ context.Context, org uuid.UUID) error { st.InvalidatePlacement(org); return nil }
		res, err := a.MoveOrg(ctx, A.ID, p, o)
		if err != nil {
			t.Fatalf("move %s → %s: %v", from, to, err)
		}
		if res.Tables["prompts"].Rows == 0 {
			t.Errorf("move %s → %s copied %+v", from, to, res.Tables)
		}
		// The source is emptied no sooner than the grace after the
		// cut-over (a gateway that missed the notice reads it until
		// then): the audit rows' times, whichever way the readers above
		// happen to interleave.
		var gap time.Duration
		err = owner.QueryRow(ctx, `SELECT (SELECT max(created_at) FROM audit_log WHERE organization_id = $1 AND action = 'org.move.done') -
			(SELECT max(created_at) FROM audit_log WHERE organization_id = $1 AND action = 'org.move.cutover')`, A.ID).Scan(&gap)
		if err != nil || gap < o.Grace {
			t.Errorf("move %s → %s: the source emptied %s after the cut-over (%v), want at least the grace, %s", from, to, gap, err, o.Grace)
		}
		pool, schema := where(t, owner, A.ID, from)
		if left := totalsIn(t, pool, schema, A.ID); left.Rows != 0 || left.Hourly != 0 || left.Daily != 0 || left.U != 0 {
			t.Errorf("the source %s still holds %+v", from, left)
		}
		from = to
	}
	close(stop)
	wg.Wait()
	if err := readErr.get(); err != nil {
		t.Fatal(err)
	}

	n := sent.Load()
	want := before.Rows + n
	waitFor(t, 30*time.Second, "every record in the final place", func() bool {
		return totalsIn(t, owner, "public", A.ID).Rows >= want
	})
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
	after := totalsIn(t, owner, "public", A.ID)
	if after.Rows != want || int64(len(after.IDs)) != want {
		t.Errorf("after: %d rows (%d ids), want %d", after.Rows, len(after.IDs), want)
	}
	for id := range before.IDs {
		if !after.IDs[id] {
			t.Errorf("row %s lost", id)
		}
	}
	if after.Tokens != before.Tokens+tokSent.Load() {
		t.Errorf("tokens %d, want %d", after.Tokens, before.Tokens+tokSent.Load())
	}
	wantReq := int64(history) + n
	if after.Hourly != wantReq || after.Daily != wantReq || after.U != wantReq {
		t.Errorf("rollup requests hourly %d daily %d by user %d, want %d each", after.Hourly, after.Daily, after.U, wantReq)
	}
	if after.HourlyTok != after.DailyTok || after.HourlyTok != before.HourlyTok+tokSent.Load() {
		t.Errorf("rollup tokens hourly %d daily %d, want %d", after.HourlyTok, after.DailyTok, before.HourlyTok+tokSent.Load())
	}
	if s := w.Stats(); s.DeadLetters != 0 || s.Lost != 0 {
		t.Errorf("writer stats %+v", s)
	}
	// B was never moved and kept every row.
	if b := totalsIn(t, owner, "public", B.ID); b.Rows != history+n || b.Hourly != history+n {
		t.Errorf("B: %d rows, %d in rollups, want %d", b.Rows, b.Hourly, history+n)
	}
	// The schema A passed through is gone; the audit log has every step.
	if ok, _ := schemaInfo(t, owner, store.SchemaName(A.ID)); ok {
		t.Error("A's schema is still there")
	}
	var actions []string
	err = owner.QueryRow(ctx, `SELECT array_agg(action ORDER BY id) FROM audit_log WHERE organization_id = $1 AND action LIKE 'org.move.%'`, A.ID).Scan(&actions)
	if err != nil {
		t.Fatal(err)
	}
	one := []string{"org.move.start", "org.move.copy", "org.move.copied", "org.move.cutover", "org.move.done"}
	if got, want := strings.Join(actions, " "), strings.TrimSpace(strings.Repeat(strings.Join(one, " ")+" ", 3)); got != want {
		t.Errorf("audit:\n%s\nwant\n%s", got, want)
	}
}

// A move stopped after each of its steps (its process dying) is finished
// by ResumeMove: every row once in the destination, none in the source.
func TestMoveResumesAfterEachStep(t *testing.T) {
	storetest.Targets(t)
	a := storetest.PlacedAdmin(t)
	owner := storetest.OwnerPool(t)
	ctx := context.Background()
	for _, step := range []string{"hold", "copy", "copied", "cleanup"} {
		t.Run(step, func(t *testing.T) {
			o, _, err := a.CreateOrgPlaced(ctx, store.NewOrg{Name: "resume " + step, Capture: store.CaptureFull,
				Placement: store.Placement{Kind: store.PlaceSchema}}, store.Idempotency{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { a.DeleteOrg(context.Background(), o.ID) })
			seedPlacePrompts(t, owner, store.SchemaName(o.ID), o.ID, 90)
			before := totalsIn(t, owner, store.SchemaName(o.ID), o.ID)

			opts := moveOpts()
			store.StopMoveAfterForTest(&opts, step)
			to := store.Placement{Kind: store.PlaceDatabase, Target: "t2"}
			if _, err := a.MoveOrg(ctx, o.ID, to, opts); !errors.Is(err, store.ErrMoveStoppedForTest) {
				t.Fatalf("move stopped after %s: %v", step, err)
			}
			if _, err := a.MoveOrg(ctx, o.ID, store.Placement{Kind: store.PlaceShared}, moveOpts()); !errors.Is(err, store.ErrMoveInProgress) {
				t.Errorf("a second move during the first: %v", err)
			}
			if _, err := a.DeleteOrg(ctx, o.ID); !errors.Is(err, store.ErrMoveInProgress) {
				t.Errorf("deleting during the move: %v", err)
			}
			if _, err := a.ResumeMove(ctx, o.ID, moveOpts()); err != nil {
				t.Fatalf("resume: %v", err)
			}
			got := totalsIn(t, targetOwner(t, "t2"), "public", o.ID)
			if got.Rows != before.Rows || got.Tokens != before.Tokens || got.Hourly != before.Hourly || got.Daily != before.Daily || got.U != before.U {
				t.Errorf("after resume: %+v, want %+v", got, before)
			}
			if ok, _ := schemaInfo(t, owner, store.SchemaName(o.ID)); ok {
				t.Error("the source schema is still there")
			}
			org, err := a.Org(ctx, o.ID)
			if err != nil || org.Placement != "database:t2" {
				t.Errorf("placement %q, %v", org.Placement, err)
			}
			if _, err := a.ResumeMove(ctx, o.ID, moveOpts()); !errors.Is(err, store.ErrNoMove) {
				t.Errorf("resume with no move: %v", err)
			}
		})
	}
}

// Refused moves change nothing: the same placement, an unknown target, an
// unknown organization; the organization stays where it was, unmoved.
func TestMoveRefusals(t *testing.T) {
	storetest.Targets(t)
	a := storetest.PlacedAdmin(t)
	owner := storetest.OwnerPool(t)
	ctx := context.Background()
	o, _, err := a.CreateOrgPlaced(ctx, store.NewOrg{Name: "refusals", Capture: store.CaptureFull}, store.Idempotency{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.DeleteOrg(context.Background(), o.ID) })
	seedPlacePrompts(t, owner, "public", o.ID, 5)
	cases := []struct {
		name string
		org  uuid.UUID
		to   store.Placement
		want error
	}{
		{"same placement", o.ID, store.Placement{Kind: store.PlaceShared}, store.ErrSamePlacement},
		{"unknown target", o.ID, store.Placement{Kind: store.PlaceDatabase, Target: "nowhere"}, store.ErrUnknownTarget},
		{"unknown organization", uuid.New(), store.Placement{Kind: store.PlaceSchema}, store.ErrNotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := a.MoveOrg(ctx, c.org, c.to, moveOpts())
			if !errors.Is(err, c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("got %v, want %v on one line", err, c.want)
			}
		})
	}
	from, to, step, err := a.MoveStep(ctx, o.ID)
	if err != nil || from != "shared" || to != "" || step != "" {
		t.Errorf("after refusals: %q %q %q %v", from, to, step, err)
	}
	if n := totalsIn(t, owner, "public", o.ID).Rows; n != 5 {
		t.Errorf("%d rows left, want 5", n)
	}
	if ok, _ := schemaInfo(t, owner, store.SchemaName(o.ID)); ok {
		t.Error("a refused move left a schema")
	}
}

// The operator's report across tenants while a tenant schema goes: an
// organization deleted between UsageByOrg's list of organizations and the
// read of its schema is left out (its schema is gone, and so is it), not
// a failure of the whole report; the others are counted as before.
func TestUsageByOrgWhileATenantGoes(t *testing.T) {
	a := storetest.PlacedAdmin(t)
	owner := storetest.OwnerPool(t)
	ctx := context.Background()
	mk := func(name string) store.Organization {
		return placedTenant(t, a, name, store.Placement{Kind: store.PlaceSchema})
	}
	gone, stays := mk("deleted meanwhile"), mk("stays")
	seedPlacePrompts(t, owner, store.SchemaName(gone.ID), gone.ID, 5)
	seedPlacePrompts(t, owner, store.SchemaName(stays.ID), stays.ID, 7)
	deleteWhenOrgsListed(t, a, gone.ID)
	us, err := a.UsageByOrg(ctx, time.Now().Add(-2*time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatalf("UsageByOrg with a tenant deleted meanwhile: %v", err)
	}
	seen := map[uuid.UUID]int64{}
	for _, u := range us {
		seen[u.OrganizationID] = u.Requests
	}
	if _, ok := seen[gone.ID]; ok || seen[stays.ID] != 7 {
		t.Errorf("report: the deleted tenant %v (want absent), the other %d requests (want 7)", seen[gone.ID], seen[stays.ID])
	}
}

// migrate and migrate status while a tenant schema goes: an organization
// deleted between their list of organizations and their walk of its
// schema is left out, not an error, and migrate makes no schema for it.
func TestPlacesWhileATenantGoes(t *testing.T) {
	ts := storetest.Targets(t)
	a := storetest.PlacedAdmin(t)
	owner := storetest.OwnerPool(t)
	ctx := context.Background()
	for _, migrate := range []bool{false, true} {
		o := placedTenant(t, a, "deleted meanwhile", store.Placement{Kind: store.PlaceSchema})
		deleteWhenOrgsListed(t, a, o.ID)
		walk := store.PlacesStatus
		if migrate {
			walk = store.MigratePlaces
		}
		places, err := walk(ctx, storetest.OwnerDSN(), ts)
		if err != nil {
			t.Errorf("migrate=%v with a tenant deleted meanwhile: %v", migrate, err)
		}
		for _, p := range places {
			if p.Org != nil && *p.Org == o.ID {
				t.Errorf("migrate=%v lists the deleted tenant's schema: %+v", migrate, p)
			}
		}
		var n int
		if err := owner.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname = $1`, store.SchemaName(o.ID)).Scan(&n); err != nil || n != 0 {
			t.Errorf("migrate=%v: %d schemas of the deleted tenant (%v)", migrate, n, err)
		}
	}
}

// While a tenant's rows are in two places (copied before the cut-over,
// not yet removed after it), the operator's usage report counts them once.
func TestMoveUsageByOrgOnce(t *testing.T) {
	storetest.Targets(t)
	a := storetest.PlacedAdmin(t)
	owner := storetest.OwnerPool(t)
	ctx := context.Background()
	o, _, err := a.CreateOrgPlaced(ctx, store.NewOrg{Name: "usage once", Capture: store.CaptureFull}, store.Idempotency{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.DeleteOrg(context.Background(), o.ID) })
	seedPlacePrompts(t, owner, "public", o.ID, 25)
	requests := func() int64 {
		t.Helper()
		us, err := a.UsageByOrg(ctx, time.Now().Add(-2*time.Hour), time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range us {
			if u.OrganizationID == o.ID {
				return u.Requests
			}
		}
		return 0
	}
	for _, step := range []string{"copied", "cleanup"} {
		opts := moveOpts()
		store.StopMoveAfterForTest(&opts, step)
		var err error
		if step == "copied" {
			_, err = a.MoveOrg(ctx, o.ID, store.Placement{Kind: store.PlaceDatabase, Target: "t1"}, opts)
		} else {
			_, err = a.ResumeMove(ctx, o.ID, opts)
		}
		if !errors.Is(err, store.ErrMoveStoppedForTest) {
			t.Fatalf("stopping at %s: %v", step, err)
		}
		if n := requests(); n != 25 {
			t.Errorf("at step %s the report counts %d requests, want 25", step, n)
		}
	}
	if _, err := a.ResumeMove(ctx, o.ID, moveOpts()); err != nil {
		t.Fatal(err)
	}
	if n := requests(); n != 25 {
		t.Errorf("after the move the report counts %d requests, want 25", n)
	}
}

// firstError keeps the first error set, for goroutines to report.
type firstError struct {
	mu  sync.Mutex
	err error
}

func (f *firstError) set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

func (f *firstError) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// Records parked during a move survive the gateway's restart: a new
// writer on the same spool drains them to the destination after the
// cut-over, each once.
func TestMoveParkedRecordsSurviveRestart(t *testing.T) {
	storetest.Targets(t)
	a := storetest.PlacedAdmin(t)
	owner := storetest.OwnerPool(t)
	ctx := context.Background()
	o, _, err := a.CreateOrgPlaced(ctx, store.NewOrg{Name: "parked", Capture: store.CaptureFull}, store.Idempotency{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.DeleteOrg(context.Background(), o.ID) })
	opts := moveOpts()
	store.StopMoveAfterForTest(&opts, "copy") // held, as if the mover died
	if _, err := a.MoveOrg(ctx, o.ID, store.Placement{Kind: store.PlaceSchema}, opts); !errors.Is(err, store.ErrMoveStoppedForTest) {
		t.Fatal(err)
	}

	st := storetest.Open(t, store.Options{})
	dir := t.TempDir()
	wopts := store.WriterOptions{SpoolDir: dir, FlushInterval: 5 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}
	w := startWriter(t, st, wopts)
	run := "parked" + uuid.NewString()[:8]
	const n = 30
	for i := range n {
		w.Record(rec(o.ID, run, i))
	}
	time.Sleep(300 * time.Millisecond)
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
	if got := countIn(t, owner, "public", o.ID, run); got != 0 {
		t.Fatalf("%d records written to the source during the hold", got)
	}

	if _, err := a.ResumeMove(ctx, o.ID, moveOpts()); err != nil {
		t.Fatal(err)
	}
	st2 := storetest.Open(t, store.Options{})
	w2 := startWriter(t, st2, wopts)
	waitFor(t, 30*time.Second, "the parked records in the destination", func() bool {
		return countIn(t, owner, store.SchemaName(o.ID), o.ID, run) == n
	})
	if err := w2.stop(t); err != nil {
		t.Fatal(err)
	}
	if got := countIn(t, owner, store.SchemaName(o.ID), o.ID, run); got != n {
		t.Errorf("%d rows in the destination, want %d", got, n)
	}
}

// Retention and the day partitions' upkeep while a tenant schema goes: a
// deletion that has dropped the schema and not yet committed (held here
// at its cascade into api_keys) fails neither of them; retention does
// not wait for it, and the other tenants' rows past their retention go.
func TestMaintenanceWhileATenantGoes(t *testing.T) {
	storetest.Targets(t)
	a := storetest.PlacedAdmin(t)
	owner := storetest.OwnerPool(t)
	st := storetest.Open(t, store.Options{})
	ctx := context.Background()
	days := store.Retention(1)
	schema := store.Placement{Kind: store.PlaceSchema}
	kept := placedTenant(t, a, "kept", schema)
	oldRows := func(o store.Organization) {
		if _, err := a.UpdateOrg(ctx, o.ID, store.OrgChanges{Retention: &days}); err != nil {
			t.Fatal(err)
		}
		seedPlacePrompts(t, owner, store.SchemaName(o.ID), o.ID, 2)
		if _, err := owner.Exec(ctx, `INSERT INTO `+store.SchemaName(o.ID)+`.prompts (organization_id, request_id, model, status, created_at)
			SELECT $1, 'old-' || g, 'm', 200, now() - interval '3 days' FROM generate_series(1, 3) g`, o.ID); err != nil {
			t.Fatal(err)
		}
	}
	oldRows(kept)
	for _, step := range []struct {
		name string
		run  func() error
	}{
		{"retention", func() error { _, err := st.ApplyRetention(ctx); return err }},
		{"partitions", func() error { _, err := st.CreatePartitions(ctx, 16); return err }},
		{"roll days", func() error { _, err := st.RollDays(ctx); return err }},
	} {
		gone := placedTenant(t, a, "deleted meanwhile", schema)
		oldRows(gone)
		var hash [32]byte
		copy(hash[:], gone.ID[:])
		if _, err := a.CreateKey(ctx, store.NewKey{OrgID: gone.ID, Hash: hash, DisplayPrefix: "sk_held",
			Name: "held", RateLimitPerMinute: 60}); err != nil {
			t.Fatal(err)
		}
		hold, deleter, deleted := heldDeletion(t, a, owner, gone.ID, `SELECT FROM api_keys WHERE organization_id = $1 FOR UPDATE`)
		// The schema is dropped now, uncommitted. The step runs; if it
		// waits for the deletion, the deletion is let go after a moment.
		done := make(chan error, 1)
		go func() { done <- step.run() }()
		var err2 error
		select {
		case err2 = <-done:
			hold.Rollback(ctx)
		case <-time.After(time.Second):
			waiting := len(blockedBy(t, owner, deleter)) > 0
			hold.Rollback(ctx)
			err2 = <-done
			if step.name == "retention" && waiting {
				t.Errorf("retention waited for the deletion")
			}
		}
		if err2 != nil {
			t.Errorf("%s while a tenant schema goes: %v", step.name, err2)
		}
		if err := <-deleted; err != nil {
			t.Fatalf("%s: the deletion: %v", step.name, err)
		}
	}
	var n int
	if err := owner.QueryRow(ctx, `SELECT count(*) FROM `+store.SchemaName(kept.ID)+`.prompts WHERE organization_id = $1`, kept.ID).Scan(&n); err != nil || n != 2 {
		t.Errorf("the kept tenant has %d rows (%v), want its 2 recent ones", n, err)
	}
}

// Deleting a tenant with a large request log does not hold up the
// writer: its rows go in steps before the transaction that locks the
// organization, so an insert for it (whose reference check takes FOR KEY
// SHARE of the organization) does not wait while they go; the row it
// inserted goes with the rest.
func TestDeleteOrgLetsInsertsThrough(t *testing.T) {
	a := storetest.PlacedAdmin(t)
	owner := storetest.OwnerPool(t)
	ctx := context.Background()
	o := placedTenant(t, a, "deleted with a log", store.Placement{Kind: store.PlaceShared})
	seedPlacePrompts(t, owner, "public", o.ID, 3)
	// Hold one of its rows: the deletion of its log waits there.
	hold, deleter, deleted := heldDeletion(t, a, owner, o.ID, `SELECT FROM prompts WHERE organization_id = $1 LIMIT 1 FOR UPDATE`)
	defer hold.Rollback(ctx)
	inserted := make(chan error, 1)
	go func() {
		inserted <- pgx.BeginFunc(ctx, owner, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT set_config('app.current_tenant_id', $1, true)`, o.ID.String()); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO prompts (organization_id, request_id, model, status) VALUES ($1, 'meanwhile', 'm', 200)`, o.ID)
			return err
		})
	}()
	select {
	case err := <-inserted:
		if err != nil {
			t.Errorf("an insert for the tenant while its log is deleted: %v", err)
		}
	case <-time.After(2 * time.Second):
		if len(blockedBy(t, owner, deleter)) > 0 {
			t.Error("an insert for the tenant waited for its deletion")
		}
		hold.Rollback(ctx)
		<-inserted
	}
	hold.Rollback(ctx)
	if err := <-deleted; err != nil {
		t.Fatal(err)
	}
	var n int
	if err := owner.QueryRow(ctx, `SELECT count(*) FROM prompts WHERE organization_id = $1`, o.ID).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d rows of the deleted tenant left (%v)", n, err)
	}
}

// heldDeletion starts a.DeleteOrg(org) and returns once it waits for a
// lock that hold, a transaction of owner in org's tenant context, took
// with lock ($1: org), with the deletion's backend and its outcome to
// come.
func heldDeletion(t *testing.T, a *store.Admin, owner *pgxpool.Pool, org uuid.UUID, lock string) (hold pgx.Tx, deleter uint32, deleted <-chan error) {
	t.Helper()
	ctx := context.Background()
	hold, err := owner.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var holder uint32
	if err := hold.QueryRow(ctx, `SELECT pg_backend_pid(), set_config('app.current_tenant_id', $1, true) IS NOT NULL`, org.String()).Scan(&holder, new(bool)); err != nil {
		t.Fatal(err)
	}
	if _, err := hold.Exec(ctx, lock, org); err != nil {
		t.Fatal(err)
	}
	out := make(chan error, 1)
	go func() { _, err := a.DeleteOrg(ctx, org); out <- err }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if pids := blockedBy(t, owner, holder); len(pids) > 0 {
			return hold, pids[0], out
		}
		if time.Now().After(deadline) {
			t.Fatalf("the deletion never reached the lock of %q", lock)
		}
	}
}

// blockedBy lists the backends waiting for a lock that pid holds.
func blockedBy(t *testing.T, pool *pgxpool.Pool, pid uint32) []uint32 {
	t.Helper()
	rows, _ := pool.Query(context.Background(), `SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, pid)
	pids, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
	if err != nil {
		t.Fatal(err)
	}
	return pids
}

// deleteWhenOrgsListed deletes org, once, from the hook between a walk's
// list of organizations and its reads of their places (UsageByOrg,
// MigratePlaces, PlacesStatus), until the test ends.
func deleteWhenOrgsListed(t *testing.T, a *store.Admin, org uuid.UUID) {
	t.Helper()
	var once sync.Once
	store.SetAfterOrgsListedForTest(func() {
		once.Do(func() {
			if _, err := a.DeleteOrg(context.Background(), org); err != nil {
				t.Error(err)
			}
		})
	})
	t.Cleanup(func() { store.SetAfterOrgsListedForTest(nil) })
}

// A move that ends while the organization is being deleted, between the
// deletion's read of its placement and its locked transaction, leaves
// none of its rows anywhere: the deletion follows the organization to
// where the move put it (a schema dropped, a database target's rows
// deleted), not where it was when the deletion began.
func TestDeleteOrgAfterAMoveEnds(t *testing.T) {
	storetest.Targets(t)
	a := storetest.PlacedAdmin(t)
	owner := storetest.OwnerPool(t)
	ctx := context.Background()
	for _, c := range []struct{ from, to store.Placement }{
		{store.Placement{Kind: store.PlaceShared}, store.Placement{Kind: store.PlaceSchema}},
		{store.Placement{Kind: store.PlaceSchema}, store.Placement{Kind: store.PlaceDatabase, Target: "t1"}},
		{store.Placement{Kind: store.PlaceDatabase, Target: "t1"}, store.Placement{Kind: store.PlaceShared}},
	} {
		t.Run(c.from.String()+" to "+c.to.String(), func(t *testing.T) {
			o, _, err := a.CreateOrgPlaced(ctx, store.NewOrg{Name: "deleted mid-move", Capture: store.CaptureFull, Placement: c.from}, store.Idempotency{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { a.DeleteOrg(context.Background(), o.ID) })
			place := func(p store.Placement) (*pgxpool.Pool, string) {
				switch p.Kind {
				case store.PlaceSchema:
					return owner, store.SchemaName(o.ID)
				case store.PlaceDatabase:
					return targetOwner(t, p.Target), "public"
				}
				return owner, "public"
			}
			pool, schema := place(c.from)
			seedPlacePrompts(t, pool, schema, o.ID, 40)
			var once sync.Once
			store.SetAfterDeletionReadForTest(func() {
				once.Do(func() {
					if _, err := a.MoveOrg(ctx, o.ID, c.to, moveOpts()); err != nil {
						t.Errorf("the move: %v", err)
					}
				})
			})
			t.Cleanup(func() { store.SetAfterDeletionReadForTest(nil) })
			if _, err := a.DeleteOrg(ctx, o.ID); err != nil {
				t.Fatalf("deleting: %v", err)
			}
			if _, err := a.Org(ctx, o.ID); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("the organization after its deletion: %v", err)
			}
			if ok, _ := schemaInfo(t, owner, store.SchemaName(o.ID)); ok {
				t.Error("its schema outlived it")
			}
			for _, p := range []store.Placement{c.from, c.to} {
				if p.Kind == store.PlaceSchema {
					continue // checked above
				}
				pool, schema := place(p)
				if got := totalsIn(t, pool, schema, o.ID); got.Rows != 0 || got.Hourly != 0 {
					t.Errorf("%s still holds %d of its rows, %d of its hourly rollups", p, got.Rows, got.Hourly)
				}
			}
		})
	}
}
