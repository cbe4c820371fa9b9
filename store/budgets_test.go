package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

func TestParseBudgetWindow(t *testing.T) {
	for in, want := range map[string]string{"day": "day", "month": "month", "rolling:24h": "rolling:24h0m0s", "rolling:90m": "rolling:1h30m0s"} {
		if w, err := store.ParseBudgetWindow(in); err != nil || w.String() != want {
			t.Errorf("ParseBudgetWindow(%q) = %v, %v; want %s", in, w, err, want)
		}
	}
	for _, in := range []string{"", "week", "rolling:", "rolling:30s", "rolling:9000h", "rolling:1.5s", "rolling:-1h", "Day"} {
		if w, err := store.ParseBudgetWindow(in); err == nil {
			t.Errorf("ParseBudgetWindow(%q) = %v, want an error", in, w)
		}
	}
	now := time.Date(2026, 12, 7, 5, 30, 0, 0, time.UTC)
	for w, want := range map[store.BudgetWindow]time.Time{
		{Kind: "day"}:                         time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC),
		{Kind: "month"}:                       time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
		{Kind: "rolling", Rolling: time.Hour}: now.Add(-time.Hour),
	} {
		if got := w.Start(now); !got.Equal(want) {
			t.Errorf("%s: Start = %s, want %s", w, got, want)
		}
	}
	for w, want := range map[store.BudgetWindow]time.Time{
		{Kind: "day"}:                         time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC),
		{Kind: "month"}:                       time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC),
		{Kind: "rolling", Rolling: time.Hour}: now.Add(time.Minute),
	} {
		if got := w.NextChange(now); !got.Equal(want) {
			t.Errorf("%s: NextChange = %s, want %s", w, got, want)
		}
	}
}

// Budgets are set (replacing one of the same scope), listed and removed
// by the operator, audited; bad ones are refused whole. Tenant B reads
// none of A's budgets, nor A's spend.
func TestBudgets(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	admin := storetest.Admin(t)
	ctx := context.Background()
	orgs := newOrgs(t, owner, 2)
	a, b := orgs[0], orgs[1]
	key := uuid.New()
	if _, err := owner.Exec(ctx, `INSERT INTO api_keys (organization_id, id, key_hash, display_prefix, name, rate_limit_per_minute)
		VALUES ($1, $2, $3, 'sk_b', 'budget test', 60)`, a, key, append(key[:], key[:]...)); err != nil {
		t.Fatal(err)
	}
	user := "alice"
	day := store.BudgetWindow{Kind: "day"}
	org, err := admin.SetBudget(ctx, store.Budget{OrgID: a, Limit: 1_000_000, Window: day, AlertAt: []int{1000, 800, 800}})
	if err != nil || org.Level() != "organization" || len(org.AlertAt) != 2 || org.AlertAt[0] != 800 {
		t.Fatalf("SetBudget: %+v, %v", org, err)
	}
	again, err := admin.SetBudget(ctx, store.Budget{OrgID: a, Limit: 2_000_000, Window: store.BudgetWindow{Kind: "rolling", Rolling: time.Hour}})
	if err != nil || again.ID != org.ID || again.Limit != 2_000_000 || again.Window.Rolling != time.Hour {
		t.Fatalf("replacing: %+v, %v", again, err)
	}
	if _, err := admin.SetBudget(ctx, store.Budget{OrgID: a, KeyID: &key, EndUser: &user, Limit: 5, Window: day}); err != nil {
		t.Fatal(err)
	}
	other := uuid.New()
	for name, bad := range map[string]store.Budget{
		"zero":          {OrgID: a, Limit: 0, Window: day},
		"negative":      {OrgID: a, Limit: -1, Window: day},
		"absurd":        {OrgID: a, Limit: store.MaxBudget + 1, Window: day},
		"bad window":    {OrgID: a, Limit: 1, Window: store.BudgetWindow{Kind: "week"}},
		"bad alert":     {OrgID: a, Limit: 1, Window: day, AlertAt: []int{0}},
		"another's key": {OrgID: b, KeyID: &key, Limit: 1, Window: day},
		"no key":        {OrgID: a, KeyID: &other, Limit: 1, Window: day},
		"no org":        {OrgID: uuid.New(), Limit: 1, Window: day},
	} {
		if got, err := admin.SetBudget(ctx, bad); err == nil {
			t.Errorf("%s: SetBudget = %+v, want an error", name, got)
		}
	}
	if _, err := admin.SetBudget(ctx, store.Budget{OrgID: b, KeyID: &key, Limit: 1, Window: day}); !errors.Is(err, store.ErrNoKey) {
		t.Errorf("another organization's key: %v, want ErrNoKey", err)
	}
	if list, err := admin.Budgets(ctx, &a); err != nil || len(list) != 2 {
		t.Errorf("Budgets(a) = %+v, %v; want 2", list, err)
	}
	if list, err := st.BudgetsFor(ctx, a); err != nil || len(list) != 2 {
		t.Errorf("BudgetsFor(a) = %+v, %v; want 2", list, err)
	}
	if list, err := st.BudgetsFor(ctx, b); err != nil || len(list) != 0 {
		t.Errorf("tenant B reads budgets %+v, %v", list, err)
	}
	var audits int
	if err := owner.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE organization_id = $1 AND action LIKE 'budget.%'`, a).Scan(&audits); err != nil || audits != 3 {
		t.Errorf("%d audit rows, %v; want 3", audits, err)
	}

	// Spend: A's priced rows in the window, from rollups and rows alike;
	// B's rows and A's rows before the window do not count.
	now := time.Now().UTC()
	for _, o := range orgs {
		if _, err := owner.Exec(ctx, `INSERT INTO prompts (organization_id, id, request_id, api_key_id, model, status, created_at, end_user, cost_micros)
			SELECT $1, prompts_row_id(t, gen_random_uuid()), 'b-' || g, CASE WHEN $1 = $3::uuid AND g % 2 = 0 THEN $4::uuid END, 'm', 200, t,
				CASE WHEN g % 3 = 0 THEN 'alice' END, 1000
			FROM generate_series(1, 300) g, LATERAL (SELECT $2::timestamptz - g * interval '1 minute' AS t) c`, o, now, a, key); err != nil {
			t.Fatal(err)
		}
	}
	win := now.Add(-150*time.Minute - 30*time.Second) // rows 1..150
	for _, c := range []struct {
		b    store.Budget
		want store.MicroUSD
	}{
		{store.Budget{OrgID: a}, 150 * 1000},
		{store.Budget{OrgID: a, KeyID: &key}, 75 * 1000},
		{store.Budget{OrgID: a, EndUser: &user}, 50 * 1000},
		{store.Budget{OrgID: a, KeyID: &key, EndUser: &user}, 25 * 1000},
	} {
		if got, err := st.BudgetSpend(ctx, c.b, win, now.Add(time.Second)); err != nil || got != c.want {
			t.Errorf("%s spend = %d, %v; want %d", c.b.Level(), got, err, c.want)
		}
	}

	ws := day.Start(now)
	if ok, err := st.ClaimBudgetAlert(ctx, a, org.ID, ws, 800); err != nil || !ok {
		t.Errorf("first claim: %v, %v", ok, err)
	}
	if ok, err := st.ClaimBudgetAlert(ctx, a, org.ID, ws, 800); err != nil || ok {
		t.Errorf("second claim: %v, %v; want false", ok, err)
	}
	if ok, err := st.ClaimBudgetAlert(ctx, b, org.ID, ws, 900); err == nil && ok {
		t.Errorf("tenant B claimed an alert of A's budget")
	}

	if _, err := admin.RemoveBudget(ctx, a, nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RemoveBudget(ctx, a, nil, nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("removing twice: %v, want ErrNotFound", err)
	}
}
