package store_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

func TestNewRowID(t *testing.T) {
	seen := make(map[uuid.UUID]bool, 100_000)
	var prev uuid.UUID
	at := time.Now()
	for i := 0; i < 100_000; i++ {
		if i%1000 == 0 {
			at = at.Add(time.Duration(rand.IntN(3000)) * time.Nanosecond) // same microsecond, or later ones
		}
		id := store.NewRowID(at)
		if id.Version() != 7 || id.Variant() != uuid.RFC4122 {
			t.Fatalf("%s: version %d variant %v, want 7 and RFC 4122", id, id.Version(), id.Variant())
		}
		if seen[id] {
			t.Fatalf("%s made twice", id)
		}
		seen[id] = true
		// The id carries its time to the microsecond, as PostgreSQL
		// stores created_at: GetPrompt finds the row there.
		got, ok := store.RowIDTime(id)
		if !ok || got.UnixMicro() != at.UnixMicro() {
			t.Fatalf("%s carries %v (%v), want %v", id, got, ok, at.Truncate(time.Microsecond))
		}
		// Ids of later microseconds sort after earlier ones, which is
		// what keeps inserts at the end of an organization's range.
		if i > 0 && bytes.Compare(id[:8], prev[:8]) < 0 {
			t.Fatalf("%s after %s: time went back", id, prev)
		}
		prev = id
	}
}

func TestRowIDTimeRefusesOtherUUIDs(t *testing.T) {
	v7 := store.NewRowID(time.Now())
	sub999 := v7
	binary.BigEndian.PutUint16(sub999[6:], 0x7000|999)
	sub1000 := v7
	binary.BigEndian.PutUint16(sub1000[6:], 0x7000|1000)
	badVariant := v7
	badVariant[8] &^= 0x80
	for _, c := range []struct {
		name string
		id   uuid.UUID
		ok   bool
	}{
		{"a row id", v7, true},
		{"999 µs", sub999, true},
		{"1000 µs", sub1000, false},
		{"version 4", uuid.New(), false},
		{"uuid.NewV7 (random sub-millisecond bits)", func() uuid.UUID {
			for {
				if id := uuid.Must(uuid.NewV7()); binary.BigEndian.Uint16(id[6:])&0xfff >= 1000 {
					return id
				}
			}
		}(), false},
		{"variant", badVariant, false},
		{"nil", uuid.Nil, false},
	} {
		if _, ok := store.RowIDTime(c.id); ok != c.ok {
			t.Errorf("%s (%s): ok %v, want %v", c.name, c.id, ok, c.ok)
		}
	}
}

// settleRowID gives every record an id that carries its CreatedAt, as
// migration 00008 gave the rows already stored, keeping the random bits.
func TestSettleRowID(t *testing.T) {
	at := time.Date(2026, 11, 28, 19, 0, 0, 123_456_789, time.UTC)
	same := store.NewRowID(at)
	old := uuid.Must(uuid.NewV7()) // an older version's id, made apart from CreatedAt

	r := store.LogRecord{ID: same, CreatedAt: at}
	if store.SettleRowIDForTest(&r); r.ID != same || !r.CreatedAt.Equal(at) {
		t.Errorf("a settled record changed: %s %v", r.ID, r.CreatedAt)
	}
	r = store.LogRecord{ID: old, CreatedAt: at}
	if store.SettleRowIDForTest(&r); r.ID != store.RowIDForTest(at, binary.BigEndian.Uint64(old[8:])) {
		t.Errorf("an older id became %s", r.ID)
	}
	if got, _ := store.RowIDTime(r.ID); got.UnixMicro() != at.UnixMicro() || !bytes.Equal(r.ID[9:], old[9:]) {
		t.Errorf("an older id became %s: time %v, random bits kept %v", r.ID, got, bytes.Equal(r.ID[9:], old[9:]))
	}
	r = store.LogRecord{ID: same}
	if store.SettleRowIDForTest(&r); r.ID != same || r.CreatedAt.UnixMicro() != at.UnixMicro() {
		t.Errorf("no CreatedAt: %s %v, want the id's time", r.ID, r.CreatedAt)
	}
	r = store.LogRecord{CreatedAt: at}
	if store.SettleRowIDForTest(&r); r.ID == uuid.Nil {
		t.Error("no id: none assigned")
	} else if got, _ := store.RowIDTime(r.ID); got.UnixMicro() != at.UnixMicro() {
		t.Errorf("no id: %s carries %v", r.ID, got)
	}
}

// The gateway's ids and migration 00008's prompts_row_id, which re-made
// the ids of the rows already stored, must agree bit for bit: a replay of
// an older version's spool record meets its migrated row only then.
func TestRowIDMatchesSQL(t *testing.T) {
	owner := storetest.OwnerPool(t)
	storetest.Migrate(t)
	ctx := context.Background()
	for i := 0; i < 200; i++ {
		at := time.UnixMicro(rand.Int64N(4_000_000_000_000_000)) // 1970 to 2096
		var id uuid.UUID
		binary.BigEndian.PutUint64(id[:8], rand.Uint64())
		binary.BigEndian.PutUint64(id[8:], rand.Uint64())
		var sql uuid.UUID
		if err := owner.QueryRow(ctx, `SELECT prompts_row_id($1, $2)`, at, id).Scan(&sql); err != nil {
			t.Fatal(err)
		}
		if want := store.RowIDForTest(at, binary.BigEndian.Uint64(id[8:])); sql != want {
			t.Fatalf("at %v, id %s: SQL %s, Go %s", at, id, sql, want)
		}
	}
}

// BenchmarkNewRowID against uuid.NewV7, which reads crypto/rand per id.
func BenchmarkNewRowID(b *testing.B) {
	now := time.Now()
	b.Run("NewRowID", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				store.NewRowID(now)
			}
		})
	})
	b.Run("uuid.NewV7", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				uuid.Must(uuid.NewV7())
			}
		})
	})
}
