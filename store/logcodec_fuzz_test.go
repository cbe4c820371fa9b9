package store_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/store"
)

// FuzzDecodeLogRecord: a spool payload, whatever its bytes (a frame whose
// CRC passed can still be garbage: another version's bug, a disk that
// lies), decodes or returns ErrBadRecord, never panics; and what decodes
// encodes back to a payload that decodes the same.
func FuzzDecodeLogRecord(f *testing.F) {
	full := rec(uuid.MustParse("6a1c1c9e-57b4-4b0e-9a53-2f0d6a3f4c11"), "fuzz", 3)
	full.KeyID, full.Stream, full.CreatedAt = uuid.MustParse("1f0e9b43-8c3a-4d8e-b6c1-5d2f4a9e7b20"), true, time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	f.Add(store.AppendLogRecord(nil, &full))
	f.Add(store.AppendLogRecord(nil, &store.LogRecord{}))
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add([]byte{2, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{99, 1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := store.DecodeLogRecord(b)
		if err != nil {
			return
		}
		again, err := store.DecodeLogRecord(store.AppendLogRecord(nil, &r))
		if err != nil {
			t.Fatalf("a decoded record does not decode after encoding: %v", err)
		}
		if !again.CreatedAt.Equal(r.CreatedAt) {
			t.Fatalf("created_at %v became %v", r.CreatedAt, again.CreatedAt)
		}
		again.CreatedAt, r.CreatedAt = time.Time{}, time.Time{}
		if again != r {
			t.Fatalf("round trip changed the record:\n%+v\n%+v", r, again)
		}
	})
}
