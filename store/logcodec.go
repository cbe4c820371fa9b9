package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// The spool's payload: one LogRecord, binary, versioned by its first byte.
//
// Version 4, in order (version 1 lacked the ID, which decodes as zero and
// is then assigned anew; versions 1 and 2 lacked Attempts and Upstream,
// which decode as zero; versions 1 to 3 lacked the end user and the
// cost, which decode as none):
//
//	byte     version (4)
//	[16]byte ID (versions 2 and later)
//	[16]byte OrgID
//	[16]byte KeyID
//	byte     flags (bit 0: Stream; bit 1: Priced, version 4)
//	varint   PromptTokens, CompletionTokens, TotalTokens, Status,
//	         Latency (ns), CreatedAt (Unix ns; 0 for the zero time)
//	string×6 RequestID, Endpoint, Model, UsageSource, Prompt, Response,
//	         each a uvarint length and the bytes
//	varint   Attempts, CacheCreationTokens, CacheReadTokens (version 3 only)
//	string   Upstream (version 3 and later)
//	varint   Prices.Input, Prices.CachedInput, Prices.Output, Cost (version 4)
//	string   EndUser (version 4)
//
// A newer binary must keep decoding every version an older one may have
// left in a spool.
const (
	logRecordV1 = 1
	logRecordV2 = 2
	logRecordV3 = 3
	logRecordV4 = 4
)

// ErrBadRecord: a spool payload does not decode as a LogRecord.
var ErrBadRecord = errors.New("store: undecodable log record")

// AppendLogRecord appends r's spool encoding to dst.
func AppendLogRecord(dst []byte, r *LogRecord) []byte {
	dst = append(dst, logRecordV4)
	dst = append(dst, r.ID[:]...)
	dst = append(dst, r.OrgID[:]...)
	dst = append(dst, r.KeyID[:]...)
	var flags byte
	if r.Stream {
		flags |= 1
	}
	if r.Priced {
		flags |= 2
	}
	dst = append(dst, flags)
	var created int64
	if !r.CreatedAt.IsZero() {
		created = r.CreatedAt.UnixNano()
	}
	for _, v := range [...]int64{int64(r.PromptTokens), int64(r.CompletionTokens), int64(r.TotalTokens),
		int64(r.Status), int64(r.Latency), created} {
		dst = binary.AppendVarint(dst, v)
	}
	for _, s := range [...]string{r.RequestID, r.Endpoint, r.Model, r.UsageSource, r.Prompt, r.Response} {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	dst = binary.AppendVarint(dst, int64(r.Attempts))
	dst = binary.AppendVarint(dst, int64(r.CacheCreationTokens))
	dst = binary.AppendVarint(dst, int64(r.CacheReadTokens))
	dst = binary.AppendUvarint(dst, uint64(len(r.Upstream)))
	dst = append(dst, r.Upstream...)
	for _, v := range [...]MicroUSD{r.Prices.Input, r.Prices.CachedInput, r.Prices.Output, r.Cost} {
		dst = binary.AppendVarint(dst, int64(v))
	}
	dst = binary.AppendUvarint(dst, uint64(len(r.EndUser)))
	return append(dst, r.EndUser...)
}

// DecodeLogRecord decodes what AppendLogRecord wrote. The strings are
// copies; b may be reused afterwards.
func DecodeLogRecord(b []byte) (LogRecord, error) {
	var r LogRecord
	if len(b) == 0 {
		return r, fmt.Errorf("%w: empty", ErrBadRecord)
	}
	version := b[0]
	switch version {
	case logRecordV1:
		b = b[1:]
	case logRecordV2, logRecordV3, logRecordV4:
		if len(b) < 17 {
			return r, fmt.Errorf("%w: short", ErrBadRecord)
		}
		r.ID = uuid.UUID(b[1:17])
		b = b[17:]
	default:
		return r, fmt.Errorf("%w: unknown version %d", ErrBadRecord, b[0])
	}
	if len(b) < 33 {
		return r, fmt.Errorf("%w: short", ErrBadRecord)
	}
	r.OrgID = uuid.UUID(b[:16])
	r.KeyID = uuid.UUID(b[16:32])
	r.Stream = b[32]&1 != 0
	r.Priced = version >= logRecordV4 && b[32]&2 != 0
	b = b[33:]
	var ints [6]int64
	for i := range ints {
		v, n := binary.Varint(b)
		if n <= 0 {
			return LogRecord{}, fmt.Errorf("%w: bad integer", ErrBadRecord)
		}
		ints[i], b = v, b[n:]
	}
	r.PromptTokens, r.CompletionTokens, r.TotalTokens = int(ints[0]), int(ints[1]), int(ints[2])
	r.Status, r.Latency = int(ints[3]), time.Duration(ints[4])
	if ints[5] != 0 {
		r.CreatedAt = time.Unix(0, ints[5]).UTC()
	}
	for _, dst := range [...]*string{&r.RequestID, &r.Endpoint, &r.Model, &r.UsageSource, &r.Prompt, &r.Response} {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return LogRecord{}, fmt.Errorf("%w: bad string", ErrBadRecord)
		}
		*dst, b = string(b[n:n+int(l)]), b[n+int(l):]
	}
	if version >= logRecordV3 {
		for _, dst := range [...]*int{&r.Attempts, &r.CacheCreationTokens, &r.CacheReadTokens} {
			v, n := binary.Varint(b)
			if n <= 0 {
				return LogRecord{}, fmt.Errorf("%w: bad integer", ErrBadRecord)
			}
			*dst, b = int(v), b[n:]
		}
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return LogRecord{}, fmt.Errorf("%w: bad string", ErrBadRecord)
		}
		r.Upstream, b = string(b[n:n+int(l)]), b[n+int(l):]
	}
	if version >= logRecordV4 {
		for _, dst := range [...]*MicroUSD{&r.Prices.Input, &r.Prices.CachedInput, &r.Prices.Output, &r.Cost} {
			v, n := binary.Varint(b)
			if n <= 0 {
				return LogRecord{}, fmt.Errorf("%w: bad integer", ErrBadRecord)
			}
			*dst, b = MicroUSD(v), b[n:]
		}
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return LogRecord{}, fmt.Errorf("%w: bad string", ErrBadRecord)
		}
		r.EndUser, b = string(b[n:n+int(l)]), b[n+int(l):]
	}
	if len(b) != 0 {
		return LogRecord{}, fmt.Errorf("%w: %d trailing bytes", ErrBadRecord, len(b))
	}
	return r, nil
}
