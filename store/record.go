package store

import (
	"encoding/binary"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"
)

// LogRecord is one finished request as the gateway hands it to the request
// log: one row of prompts, written under OrgID's tenant context.
type LogRecord struct {
	// ID is the row's id, unique per accepted request, and carries
	// CreatedAt (NewRowID): replays of the spool are idempotent on
	// (OrgID, CreatedAt, ID). Zero: Writer.Record assigns one.
	// RequestID is not unique: a caller may send the same x-request-id
	// twice, and both requests are recorded.
	ID               uuid.UUID
	OrgID            uuid.UUID
	KeyID            uuid.UUID // uuid.Nil for a JWT principal
	RequestID        string
	Endpoint         string // "/v1/chat/completions", ...
	Model            string
	Prompt           string // the request's messages/prompt/input as sent (JSON)
	Response         string // the assembled response text, capped
	PromptTokens     int
	CompletionTokens int
	TotalTokens      int
	UsageSource      string // "upstream", "estimated" or "none"
	Status           int    // HTTP status the caller got (499: the caller went away)
	Latency          time.Duration
	Stream           bool
	CreatedAt        time.Time
	Upstream         string // the configured upstream that answered, else the last one tried; "" if none was
	Attempts         int    // upstream attempts made (fallbacks and retries included); 0 if none was
	// CacheCreationTokens and CacheReadTokens: Anthropic's prompt tokens
	// written to and read from its prompt cache, inside PromptTokens.
	CacheCreationTokens, CacheReadTokens int
	// EndUser is the caller's end user (the JWT's user_id claim, else the
	// body's "user"), "" for none; the gateway bounds it (MaxEndUserBytes).
	EndUser string
	// Priced: the model was a catalog model, Prices the prices in force
	// when the request was made and Cost what it cost at them
	// (Prices.Cost). Unpriced requests have no cost (NULL), not a zero one.
	Priced bool
	Prices Prices
	Cost   MicroUSD

	jseq uint64 // the journal segment holding the record (0: none); see journal
}

// NewRowID returns the id of a prompts row created at t: a UUIDv7 (RFC
// 9562) that carries t to the microsecond. The leading 48 bits are t's
// Unix milliseconds, rand_a (12 bits) counts t's microseconds within the
// millisecond (0-999, RFC 9562's "increased clock precision"), and the
// other 62 bits are random.
//
// The row's primary key is (organization_id, created_at, id), the order
// the log is listed in, and no other index: an id is found by the time it
// carries (RowIDTime), so one index serves both the list and the look-up
// by id (migration 00008). Ids sort by time, so new rows land at the end
// of their organization's range.
//
// The random bits come from math/rand/v2's generator, a ChaCha8 stream
// per thread that the runtime seeds from the operating system: uniqueness
// across replicas needs unpredictable bits, not a system call per id.
// uuid.NewV7 reads crypto/rand and allocates per id; BenchmarkNewRowID
// compares the two. Ids are not secrets; RLS guards rows.
func NewRowID(t time.Time) uuid.UUID {
	return rowID(t, rand.Uint64())
}

// rowID is the id of a row created at t with random bits low (its low 62
// bits are used). Migration 00008's prompts_row_id computes the same in
// SQL; TestRowIDMatchesSQL holds them together.
func rowID(t time.Time, low uint64) uuid.UUID {
	var id uuid.UUID
	// PostgreSQL keeps microseconds; binArray.timestamptz truncates alike.
	us := uint64(t.UnixMicro())
	binary.BigEndian.PutUint64(id[0:8], (us/1000)<<16|0x7000|us%1000) // time, version 7, microseconds
	binary.BigEndian.PutUint64(id[8:16], low&(1<<62-1)|1<<63)         // variant 10, random
	return id
}

// RowIDTime returns the creation time an id of NewRowID carries; false
// for any other UUID, which then names no row.
func RowIDTime(id uuid.UUID) (time.Time, bool) {
	hi := binary.BigEndian.Uint64(id[0:8])
	if hi>>12&0xf != 7 || id[8]>>6 != 2 || hi&0xfff >= 1000 {
		return time.Time{}, false
	}
	return time.UnixMicro(int64((hi>>16)*1000 + hi&0xfff)), true
}

// settleRowID makes r's ID one that carries r.CreatedAt, as every row's
// must: a missing CreatedAt is the ID's time (or now); a missing ID is a
// new one; an ID that carries another time (one of an older version's
// spool) keeps its random bits under r.CreatedAt, as migration 00008
// re-made the ids of the rows already stored, so that a replay of a
// record an older process committed still meets its row.
func settleRowID(r *LogRecord) {
	if r.CreatedAt.IsZero() {
		if t, ok := RowIDTime(r.ID); ok {
			r.CreatedAt = t
		} else {
			r.CreatedAt = time.Now()
		}
	}
	if r.ID == uuid.Nil {
		r.ID = NewRowID(r.CreatedAt)
	} else {
		r.ID = rowID(r.CreatedAt, binary.BigEndian.Uint64(r.ID[8:16]))
	}
}
