package store

import (
	"encoding/binary"
	"time"

	"github.com/google/uuid"
)

// binArray builds one one-dimensional array parameter in PostgreSQL's
// binary format, appending elements into one reused buffer. The request
// log's INSERT takes fifteen such arrays, and pgx would encode a []string
// through a plan per element, allocating as it goes; BenchmarkWriterRLS
// reports the allocations per row (one op a row).
//
// The format (array_recv): int32 ndim, int32 has-nulls flag, uint32
// element type, then per dimension int32 length and int32 lower bound;
// then per element an int32 byte length (-1 for NULL) and the element's
// own binary form.
type binArray struct {
	buf   []byte
	n     int32
	nulls bool
	oid   uint32
}

const (
	binArrayHeader = 20

	oidBool        = 16
	oidBytea       = 17
	oidInt4        = 23
	oidInt8        = 20
	oidText        = 25
	oidTimestamptz = 1184
	oidUUID        = 2950

	// microseconds from the Unix epoch to PostgreSQL's, 2000-01-01 UTC
	pgEpochUnixMicros = 946_684_800_000_000
)

var be = binary.BigEndian

func (a *binArray) reset(oid uint32) {
	if cap(a.buf) < binArrayHeader {
		a.buf = make([]byte, binArrayHeader, 4096)
	}
	a.buf, a.n, a.nulls, a.oid = a.buf[:binArrayHeader], 0, false, oid
}

func (a *binArray) text(s string) {
	a.buf = be.AppendUint32(a.buf, uint32(len(s)))
	a.buf = append(a.buf, s...)
	a.n++
}

func (a *binArray) bin(b []byte) {
	a.buf = be.AppendUint32(a.buf, uint32(len(b)))
	a.buf = append(a.buf, b...)
	a.n++
}

func (a *binArray) uuid(u uuid.UUID) {
	a.buf = be.AppendUint32(a.buf, 16)
	a.buf = append(a.buf, u[:]...)
	a.n++
}

func (a *binArray) null() {
	a.buf = be.AppendUint32(a.buf, 0xFFFF_FFFF)
	a.nulls = true
	a.n++
}

func (a *binArray) int4(v int32) {
	a.buf = be.AppendUint32(a.buf, 4)
	a.buf = be.AppendUint32(a.buf, uint32(v))
	a.n++
}

func (a *binArray) int8(v int64) {
	a.buf = be.AppendUint32(a.buf, 8)
	a.buf = be.AppendUint64(a.buf, uint64(v))
	a.n++
}

func (a *binArray) bool(v bool) {
	var b byte
	if v {
		b = 1
	}
	a.buf = append(be.AppendUint32(a.buf, 1), b)
	a.n++
}

func (a *binArray) timestamptz(t time.Time) {
	us := t.Unix()*1_000_000 + int64(t.Nanosecond())/1000 - pgEpochUnixMicros
	a.buf = be.AppendUint32(a.buf, 8)
	a.buf = be.AppendUint64(a.buf, uint64(us))
	a.n++
}

// bytes fills in the header and returns the parameter's value; it stays
// valid until the next reset.
func (a *binArray) bytes() []byte {
	h := a.buf[:binArrayHeader]
	be.PutUint32(h[0:], 1) // one dimension
	var nulls uint32
	if a.nulls {
		nulls = 1
	}
	be.PutUint32(h[4:], nulls)
	be.PutUint32(h[8:], a.oid)
	be.PutUint32(h[12:], uint32(a.n))
	be.PutUint32(h[16:], 1) // lower bound
	return a.buf
}
