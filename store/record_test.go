package store_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/store"
)

func TestNewRowID(t *testing.T) {
	before := time.Now().UnixMilli()
	seen := make(map[uuid.UUID]bool, 100_000)
	var prev uuid.UUID
	for i := 0; i < 100_000; i++ {
		id := store.NewRowID()
		if id.Version() != 7 || id.Variant() != uuid.RFC4122 {
			t.Fatalf("%s: version %d variant %v, want 7 and RFC 4122", id, id.Version(), id.Variant())
		}
		if seen[id] {
			t.Fatalf("%s made twice", id)
		}
		seen[id] = true
		// The leading 48 bits are the time: ids of later milliseconds sort
		// after earlier ones, which is what keeps inserts at the index's end.
		if i > 0 && id.Time() < prev.Time() {
			t.Fatalf("%s (%d) after %s (%d): time went back", id, id.Time(), prev, prev.Time())
		}
		prev = id
	}
	after := time.Now().UnixMilli()
	if sec, nsec := prev.Time().UnixTime(); sec*1000+nsec/1e6 < before || sec*1000+nsec/1e6 > after {
		t.Errorf("last id's time %d ms is outside [%d, %d]", sec*1000+nsec/1e6, before, after)
	}
}

// BenchmarkNewRowID against uuid.NewV7, which reads crypto/rand per id.
func BenchmarkNewRowID(b *testing.B) {
	b.Run("NewRowID", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				store.NewRowID()
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
