package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// PostgreSQL's budget counters (00020) decide as Redis's lease script
// does: build, lease (the counter counts the lease), refuse at the limit,
// give back, adjust only the generation and live buckets, drop buckets
// out of the window, close by generation.
func TestBudgetCounters(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	admin := storetest.Admin(t)
	ctx := context.Background()
	org := newOrgs(t, owner, 1)[0]
	b, err := admin.SetBudget(ctx, store.Budget{OrgID: org, Limit: 1_000_000, Window: store.BudgetWindow{Kind: "rolling", Rolling: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	part := func(bucket, low, back, backBucket, backGen int64) []store.BudgetLease {
		return []store.BudgetLease{{ID: b.ID, Limit: 1_000_000, Low: low, Bucket: bucket, TTL: time.Minute, Most: 100_000,
			BackBucket: backBucket, Back: back, BackG: backGen}}
	}
	eq := func(what string, got []int64, err error, want ...int64) {
		t.Helper()
		if err != nil || len(got) != len(want) {
			t.Fatalf("%s: %v, %v; want %v", what, got, err, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s: %v; want %v", what, got, want)
			}
		}
	}
	got, err := st.LeaseBudgets(ctx, org, 1000, 16, part(10, 10, 0, 0, 0))
	eq("missing", got, err, -1, 1)
	if err := st.InitBudgetCounter(ctx, org, b.ID, 77, 10, 300_000, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := st.InitBudgetCounter(ctx, org, b.ID, 78, 10, 0, time.Minute); err != nil { // a live one stands
		t.Fatal(err)
	}
	// 300000 spent: 1000 reserved and min(100000, 699000/16) = 43687 leased.
	got, err = st.LeaseBudgets(ctx, org, 1000, 16, part(11, 10, 0, 0, 0))
	eq("lease", got, err, 1, 344_687, 43_687, 77)
	// The lease given back (a stale generation's is not), bucket 10 out
	// of the window: 44687 in bucket 11 less 43687 back, then 1000 more.
	got, err = st.LeaseBudgets(ctx, org, 1000, 16, part(11, 11, 43_687, 11, 77))
	eq("give back", got, err, 1, 2000+62_375, 62_375, 77)
	if ok, err := st.AdjustBudgetCounter(ctx, org, b.ID, 78, 11, 11, 5); ok || err != nil {
		t.Errorf("another generation adjusted: %v %v", ok, err)
	}
	if ok, err := st.AdjustBudgetCounter(ctx, org, b.ID, 77, 10, 11, 5); ok || err != nil {
		t.Errorf("a bucket out of the window adjusted: %v %v", ok, err)
	}
	if ok, err := st.AdjustBudgetCounter(ctx, org, b.ID, 77, 11, 11, 940_000); !ok || err != nil {
		t.Errorf("adjust: %v %v", ok, err)
	}
	// 1004375 spent: refused, nothing added.
	got, err = st.LeaseBudgets(ctx, org, 1, 16, part(11, 11, 0, 0, 0))
	eq("refused", got, err, 0, 1_004_375, 1)
	if ok, err := st.CloseBudgetCounter(ctx, org, b.ID, 78); ok || err != nil {
		t.Errorf("closed another generation: %v %v", ok, err)
	}
	if ok, err := st.CloseBudgetCounter(ctx, org, b.ID, 77); !ok || err != nil {
		t.Errorf("close: %v %v", ok, err)
	}
	got, err = st.LeaseBudgets(ctx, org, 1, 16, part(11, 11, 0, 0, 0))
	eq("closed", got, err, -1, 1)
}

// Tenant isolation of budget_counters, as the app role: A's context
// neither reads, nor moves, nor writes B's counters, whichever way it
// names them (the lease function, an adjustment, raw SQL); without a
// context nothing is reached. B's counter is unchanged after it all.
func TestBudgetCountersConfined(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	admin := storetest.Admin(t)
	ctx := context.Background()
	orgs := newOrgs(t, owner, 2)
	a, b := orgs[0], orgs[1]
	day := store.BudgetWindow{Kind: "day"}
	ba, err := admin.SetBudget(ctx, store.Budget{OrgID: a, Limit: 1_000_000, Window: day})
	if err != nil {
		t.Fatal(err)
	}
	bb, err := admin.SetBudget(ctx, store.Budget{OrgID: b, Limit: 1_000_000, Window: day})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []store.Budget{ba, bb} {
		if err := st.InitBudgetCounter(ctx, x.OrgID, x.ID, 5, 100, 1000, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	bLease := func(tx pgx.Tx) ([]int64, error) {
		var out []int64
		err := tx.QueryRow(ctx, `SELECT budget_counter_lease($1, 10, 16, $2, '{1000000}', '{100}', '{100}', '{60000}', '{100000}', '{0}', '{0}', '{0}')`,
			b, []uuid.UUID{bb.ID}).Scan(&out)
		return out, err
	}
	asA := func(sql string, args ...any) (int64, error) {
		var n int64
		err := st.InTenant(ctx, a, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, sql, args...)
			n = tag.RowsAffected()
			return err
		})
		return n, err
	}
	for name, sql := range map[string]string{
		"read B's counter":   `SELECT * FROM budget_counters WHERE organization_id = $1`,
		"inflate B's spend":  `UPDATE budget_counters SET spends = '{999999999}' WHERE organization_id = $1`,
		"move B's counter":   `UPDATE budget_counters SET organization_id = organization_id WHERE organization_id = $1`,
		"delete B's counter": `DELETE FROM budget_counters WHERE organization_id = $1`,
	} {
		if n, err := asA(sql, b); n != 0 || err != nil {
			t.Errorf("%s: %d rows, %v; want none", name, n, err)
		}
	}
	if n, err := asA(`UPDATE budget_counters SET organization_id = $1`, b); n != 0 && err == nil {
		t.Errorf("moved A's counter to B: %d rows", n)
	} else if err != nil && !errors.Is(err, store.ErrForbidden) {
		t.Errorf("moving A's counter to B: %v, want a row-level security refusal", err)
	}
	if _, err := asA(`INSERT INTO budget_counters (organization_id, budget_id, generation, buckets, spends, expires_at)
		VALUES ($1, $2, 1, '{100}', '{0}', now() + interval '1 hour')`, b, bb.ID); !errors.Is(err, store.ErrForbidden) ||
		!strings.Contains(err.Error(), "row-level security") {
		t.Errorf("inserting a counter for B: %v, want a row-level security refusal", err)
	}
	if _, err := asA(`INSERT INTO budget_counters (organization_id, budget_id, generation, buckets, spends, expires_at)
		VALUES ($1, $2, 1, '{100}', '{0}', now() + interval '1 hour')`, a, bb.ID); err == nil {
		t.Error("A inserted a counter naming B's budget")
	}
	var out []int64
	if err := st.InTenant(ctx, a, func(tx pgx.Tx) error { var err error; out, err = bLease(tx); return err }); err != nil ||
		len(out) != 2 || out[0] != -1 {
		t.Errorf("A leasing from B's counter: %v %v; want it missing", out, err)
	}
	conn, err := pgx.Connect(ctx, storetest.AppDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { var err error; out, err = bLease(tx); return err }); err != nil ||
		len(out) != 2 || out[0] != -1 {
		t.Errorf("leasing without a context: %v %v; want it missing", out, err)
	}
	if err := st.InTenant(ctx, a, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE budget_counters SET spends = '{0}'`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var spends []int64
	if err := owner.QueryRow(ctx, `SELECT spends FROM budget_counters WHERE budget_id = $1`, bb.ID).Scan(&spends); err != nil ||
		len(spends) != 1 || spends[0] != 1000 {
		t.Errorf("B's counter after A's attempts: %v, %v; want {1000}", spends, err)
	}
	if ok, err := st.AdjustBudgetCounter(ctx, a, bb.ID, 5, 100, 100, 1); ok || err != nil {
		t.Errorf("A adjusted B's budget through its own context: %v %v", ok, err)
	}
}

// Leases racing the counter's first build never lose one another's
// spend: a lease whose lock came before the build committed reports the
// counter missing (its caller asks again) instead of writing an unlocked
// read over a concurrent lease. Rounds of callers each reserve 1 micro-USD
// from a counter one of them builds while the others are asking; every
// round must count them all.
func TestBudgetCounterFirstLeases(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	admin := storetest.Admin(t)
	ctx := context.Background()
	const rounds, callers = 100, 8
	for round, org := range newOrgs(t, owner, rounds) {
		b, err := admin.SetBudget(ctx, store.Budget{OrgID: org, Limit: 1_000_000, Window: store.BudgetWindow{Kind: "day"}})
		if err != nil {
			t.Fatal(err)
		}
		lease := func(amount int64) ([]int64, error) {
			return st.LeaseBudgets(ctx, org, amount, 1<<40, []store.BudgetLease{{ID: b.ID, Limit: 1_000_000, Low: 1, Bucket: 1, TTL: time.Minute}})
		}
		errs := make(chan error, callers)
		for i := range callers {
			go func() {
				if i == 0 {
					time.Sleep(time.Duration(round%5) * 200 * time.Microsecond)
					if err := st.InitBudgetCounter(ctx, org, b.ID, int64(round)+2, 1, 0, time.Minute); err != nil {
						errs <- err
						return
					}
				}
				for {
					got, err := lease(1)
					switch {
					case err != nil:
						errs <- err
						return
					case got[0] == 1:
						errs <- nil
						return
					case got[0] != -1:
						errs <- fmt.Errorf("reply %v", got)
						return
					}
				}
			}()
		}
		for range callers {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		if got, err := lease(0); err != nil || got[0] != 1 || got[1] != callers {
			t.Fatalf("round %d: %v %v; want %d counted", round, got, err, callers)
		}
	}
}

// The same race, forced: a lease of budgets b1 and b2 whose lock
// statement waits on b2 (held by t1) started before b1's counter was
// built; b1 is built, and t2 takes b1's row and adds to it, uncommitted,
// before t1 lets the lease go on. The lease must not write b1 from what
// it read while t2 held it: it reports b1 missing (its lock did not take
// it) or waits for t2 and counts on top of t2's spend.
func TestBudgetCounterLeaseLocksWhatItReads(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	admin := storetest.Admin(t)
	ctx := context.Background()
	org := newOrgs(t, owner, 1)[0]
	user := "u"
	var bs [2]store.Budget
	for i, eu := range []*string{nil, &user} { // the organization's budget and an end user's
		b, err := admin.SetBudget(ctx, store.Budget{OrgID: org, EndUser: eu, Limit: 1_000_000, Window: store.BudgetWindow{Kind: "day"}})
		if err != nil {
			t.Fatal(err)
		}
		bs[i] = b
	}
	b1, b2 := bs[0], bs[1]
	if err := st.InitBudgetCounter(ctx, org, b2.ID, 2, 1, 0, time.Minute); err != nil {
		t.Fatal(err)
	}
	// hold opens an owner transaction in org's context that runs sql
	// (taking a row lock) and returns it with its transaction id.
	hold := func(sql string, id uuid.UUID) (pgx.Tx, string) {
		t.Helper()
		tx, err := owner.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tx.Rollback(ctx) }) //nolint:errcheck // done by then, or undone
		var xid string
		if _, err := tx.Exec(ctx, `SELECT set_config('app.current_tenant_id', $1::text, true)`, org); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, sql, org, id); err != nil {
			t.Fatal(err)
		}
		if err := tx.QueryRow(ctx, `SELECT pg_current_xact_id()::text`).Scan(&xid); err != nil {
			t.Fatal(err)
		}
		return tx, xid
	}
	// waitedOn waits until a session waits for transaction xid, or done.
	waitedOn := func(xid string, done <-chan struct{}) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			var n int
			if err := owner.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted
				AND transactionid = $1::text::xid`, xid).Scan(&n); err != nil {
				t.Fatal(err)
			}
			select {
			case <-done:
				return
			default:
			}
			if n > 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no session waits for transaction %s", xid)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}

	t1, xid1 := hold(`SELECT 1 FROM budget_counters WHERE organization_id = $1 AND budget_id = $2 FOR UPDATE`, b2.ID)
	var got []int64
	var leaseErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		got, leaseErr = st.LeaseBudgets(ctx, org, 1, 1<<40, []store.BudgetLease{
			{ID: b1.ID, Limit: 1_000_000, Low: 1, Bucket: 1, TTL: time.Minute},
			{ID: b2.ID, Limit: 1_000_000, Low: 1, Bucket: 1, TTL: time.Minute},
		})
	}()
	waitedOn(xid1, done) // the lease's lock statement waits on b2, its snapshot without b1
	if err := st.InitBudgetCounter(ctx, org, b1.ID, 3, 1, 0, time.Minute); err != nil {
		t.Fatal(err)
	}
	t2, xid2 := hold(`UPDATE budget_counters SET spends = ARRAY[1000::bigint] WHERE organization_id = $1 AND budget_id = $2`, b1.ID)
	if err := t1.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	waitedOn(xid2, done) // the lease waits for t2, or is done
	if err := t2.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	<-done
	if leaseErr != nil {
		t.Fatal(leaseErr)
	}
	want := int64(1000)
	if got[0] == 1 {
		want += 1 + got[2] // the amount and the lease beyond it (0 here)
	} else if got[0] != -1 {
		t.Fatalf("lease: %v", got)
	}
	var spent int64
	if err := owner.QueryRow(ctx, `SELECT (SELECT sum(s) FROM unnest(spends) s)::bigint FROM budget_counters
		WHERE organization_id = $1 AND budget_id = $2`, org, b1.ID).Scan(&spent); err != nil {
		t.Fatal(err)
	}
	if spent != want {
		t.Errorf("b1's counter holds %d after the lease %v; want %d: a concurrent spend was overwritten", spent, got, want)
	}
}
