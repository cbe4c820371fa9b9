package store_test

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// The organization filter in SQL is a second wall: with it removed, RLS
// alone still returns only the tenant's own rows.
func TestListPromptsRLSSafetyNet(t *testing.T) {
	s := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	a, b := seedTenant(t, owner), seedTenant(t, owner)
	ctx := context.Background()
	for _, tenant := range []seeded{a, b} {
		rows, err := store.ListPromptsWithoutOrgFilterForTest(ctx, s, tenant.org, store.PromptFilter{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != tenant.prompts {
			t.Errorf("unfiltered list as %s: %d rows, want %d", tenant.org, len(rows), tenant.prompts)
		}
		for _, r := range rows {
			other := a
			if tenant.org == a.org {
				other = b
			}
			if r.APIKeyID != nil && *r.APIKeyID == other.keyID {
				t.Errorf("tenant %s saw a row of %s", tenant.org, other.org)
			}
		}
	}
}

// GetPrompt finds a row in the primary key (organization_id, created_at,
// id) at the time its id carries: every row the writer stored, and one
// inserted with the column's default id. Another tenant's id, an id of
// another form, and an id whose time or random bits differ are all the
// same ErrNotFound.
func TestGetPromptByRowID(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	orgs := newOrgs(t, owner, 2)
	a, b := orgs[0], orgs[1]
	ctx := context.Background()
	run := "get" + uuid.NewString()[:8]
	w := startWriter(t, st, store.WriterOptions{})
	var recs []store.LogRecord
	for i := range 20 {
		r := rec(a, run, i)
		if i%2 == 1 {
			r.ID, r.CreatedAt = uuid.Nil, time.Time{} // the writer assigns both
		}
		w.Record(r)
		recs = append(recs, r)
	}
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
	rows, err := st.ListPrompts(ctx, a, store.PromptFilter{Limit: 100})
	if err != nil || len(rows) != len(recs) {
		t.Fatalf("listed %d rows (%v), want %d", len(rows), err, len(recs))
	}
	for _, row := range rows {
		got, err := st.GetPrompt(ctx, a, row.ID)
		if err != nil || got.ID != row.ID || !got.CreatedAt.Equal(row.CreatedAt) || got.RequestID != row.RequestID {
			t.Fatalf("GetPrompt(%s): %+v %v, want %+v", row.ID, got, err, row)
		}
		if at, _ := store.RowIDTime(row.ID); !at.Equal(row.CreatedAt) {
			t.Errorf("row %s: id carries %v, created_at %v", row.ID, at, row.CreatedAt)
		}
		if _, err := st.GetPrompt(ctx, b, row.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("B reads A's row %s: %v, want ErrNotFound", row.ID, err)
		}
	}
	stored := map[uuid.UUID]bool{}
	for _, row := range rows {
		stored[row.ID] = true
	}
	for _, r := range recs {
		if r.ID != uuid.Nil && !stored[r.ID] {
			t.Errorf("record %s was stored under another id", r.ID)
		}
	}

	id := rows[0].ID
	otherBits := id
	otherBits[15] ^= 1
	at, _ := store.RowIDTime(id)
	otherTime := store.RowIDForTest(at.Add(time.Microsecond), binary.BigEndian.Uint64(id[8:]))
	for name, id := range map[string]uuid.UUID{
		"random bits differ": otherBits, "time differs": otherTime, "version 4": uuid.New(), "nil": uuid.Nil,
	} {
		if _, err := st.GetPrompt(ctx, a, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s (%s): %v, want ErrNotFound", name, id, err)
		}
	}

	// An insert that leaves id and created_at to their defaults gets an
	// id that carries created_at too.
	var def uuid.UUID
	if err := owner.QueryRow(ctx, `INSERT INTO prompts (organization_id, request_id, model, status)
		VALUES ($1, 'default-id', 'm', 200) RETURNING id`, a).Scan(&def); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetPrompt(ctx, a, def); err != nil {
		t.Errorf("row with the default id %s: %v", def, err)
	}
}

// ListPrompts searches newest first in windows of time that grow from a
// day (one day partition's worth first): rows spread from the future to
// years back come back complete and in order, page by page across the
// windows' edges, and Since and Until bound them.
func TestListPromptsAcrossWindows(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	owner := storetest.OwnerPool(t)
	org := newOrgs(t, owner, 1)[0]
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	ages := []time.Duration{-time.Hour, time.Hour, 47 * time.Hour, 10 * 24 * time.Hour, 100 * 24 * time.Hour,
		400 * 24 * time.Hour, 5 * 365 * 24 * time.Hour}
	var want []uuid.UUID // newest first
	for i, age := range ages {
		ts := now.Add(-age)
		id := store.NewRowID(ts)
		want = append(want, id)
		if _, err := owner.Exec(ctx, `INSERT INTO prompts (organization_id, id, request_id, model, status, created_at)
			VALUES ($1, $2, $3, 'm', 200, $4)`, org, id, "w"+string(rune('a'+i)), ts); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(ps []store.Prompt) []uuid.UUID {
		var out []uuid.UUID
		for _, p := range ps {
			out = append(out, p.ID)
		}
		return out
	}
	all, err := st.ListPrompts(ctx, org, store.PromptFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(all); !slices.Equal(got, want) {
		t.Fatalf("one page: %v, want %v", got, want)
	}
	var paged []uuid.UUID
	f := store.PromptFilter{Limit: 2}
	for range len(want) {
		page, err := st.ListPrompts(ctx, org, f)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		paged = append(paged, ids(page)...)
		last := page[len(page)-1]
		f.After = &store.Cursor{CreatedAt: last.CreatedAt, ID: last.ID}
	}
	if !slices.Equal(paged, want) {
		t.Errorf("pages of 2: %v, want %v", paged, want)
	}
	since, err := st.ListPrompts(ctx, org, store.PromptFilter{Limit: 100, Since: now.Add(-50 * 24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(since); !slices.Equal(got, want[:4]) {
		t.Errorf("since 50 days ago: %v, want %v", got, want[:4])
	}
	until, err := st.ListPrompts(ctx, org, store.PromptFilter{Limit: 100, Until: now.Add(-24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(until); !slices.Equal(got, want[2:]) {
		t.Errorf("until a day ago: %v, want %v", got, want[2:])
	}
}
