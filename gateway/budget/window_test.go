package budget

import (
	"testing"
	"time"

	"github.com/bulkheadhq/bulkhead/store"
)

// A window's buckets: day and month are one bucket each, which changes at
// UTC midnight and on the first of the month; a rolling window spans
// rollingSlots buckets; alerts belong to the calendar window, or to the
// rolling duration's period.
func TestSlot(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	day := store.BudgetWindow{Kind: "day"}
	b1, low1, _, w1 := slot(day, at("2026-12-07T23:59:59Z"))
	b2, _, _, w2 := slot(day, at("2026-12-08T00:00:00Z"))
	if b1 != low1 || b2 != b1+1 || !w1.Equal(at("2026-12-07T00:00:00Z")) || !w2.Equal(at("2026-12-08T00:00:00Z")) {
		t.Errorf("day: buckets %d, %d (low %d), windows %s, %s", b1, b2, low1, w1, w2)
	}
	// A time zone other than UTC changes nothing.
	if b, _, _, _ := slot(day, at("2026-12-08T01:00:00+02:00")); b != b1 {
		t.Errorf("day in UTC+2: bucket %d, want %d", b, b1)
	}
	month := store.BudgetWindow{Kind: "month"}
	m1, _, _, mw := slot(month, at("2026-12-31T23:59:59Z"))
	m2, _, _, _ := slot(month, at("2027-01-01T00:00:00Z"))
	if m2 != m1+1 || !mw.Equal(at("2026-12-01T00:00:00Z")) {
		t.Errorf("month: buckets %d, %d, window %s", m1, m2, mw)
	}
	rolling := store.BudgetWindow{Kind: "rolling", Rolling: time.Hour}
	b, low, ttl, rw := slot(rolling, at("2026-12-07T05:30:00Z"))
	if b-low+1 != rollingSlots || ttl < time.Hour || !rw.Equal(at("2026-12-07T05:00:00Z")) {
		t.Errorf("rolling 1h: bucket %d, low %d (%d buckets), ttl %s, window %s", b, low, b-low+1, ttl, rw)
	}
	// A minute's rolling window: second buckets.
	if b, low, _, _ := slot(store.BudgetWindow{Kind: "rolling", Rolling: time.Minute}, at("2026-12-07T05:30:00Z")); b-low+1 != 60 {
		t.Errorf("rolling 1m: %d buckets", b-low+1)
	}
}
