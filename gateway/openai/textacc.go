package openai

import (
	"bytes"
	"sync"
	"unicode/utf8"
)

// truncateUTF8 returns the longest prefix of b of at most n bytes that does
// not end inside a UTF-8 rune.
func truncateUTF8(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	for n > 0 && !utf8.RuneStart(b[n]) {
		n--
	}
	return b[:n]
}

// textAcc assembles response text up to max bytes; see Result. The zero
// value stores nothing; set max.
//
// In borrow mode (ParseResponse), the pieces stay valid until the
// accumulator is finished: a single piece without escapes is kept by
// reference and copied once, into the final string, and anything more is
// decoded straight into a pooled buffer, so the text costs one allocation.
// Otherwise (StreamTee) pieces are copied into buf at once.
type textAcc struct {
	buf       []byte
	first     []byte  // borrowed piece not yet copied into buf
	scratch   []byte  // decodes escaped pieces when they cannot go straight into buf
	pooled    *[]byte // the pool slot of buf, in borrow mode
	borrow    bool
	max       int
	total     int
	truncated bool
}

// add adds decoded text.
func (a *textAcc) add(s []byte) {
	if len(s) == 0 {
		return
	}
	a.total += len(s)
	if a.truncated {
		return
	}
	if have := len(a.buf) + len(a.first); have+len(s) > a.max {
		s = truncateUTF8(s, a.max-have)
		a.truncated = true
	}
	if a.borrow && a.first == nil && a.buf == nil {
		a.first = s
		return
	}
	a.own()
	a.buf = append(a.buf, s...)
}

// addJSON adds the JSON string raw (with its quotes), decoding escapes; it
// ignores anything that is not a string.
func (a *textAcc) addJSON(raw []byte) {
	if len(raw) < 2 || raw[0] != '"' {
		return
	}
	s := raw[1 : len(raw)-1]
	if bytes.IndexByte(s, '\\') < 0 {
		a.add(s)
		return
	}
	if !a.borrow || a.truncated {
		a.scratch, _ = appendUnquoted(a.scratch[:0], s)
		a.add(a.scratch)
		return
	}
	a.own()
	start := len(a.buf)
	a.buf, _ = appendUnquoted(a.buf, s)
	a.total += len(a.buf) - start
	if len(a.buf) > a.max {
		a.buf = truncateUTF8(a.buf, a.max)
		a.truncated = true
	}
}

// own moves a borrowed piece into buf, taking buf from the pool in borrow
// mode.
func (a *textAcc) own() {
	if a.borrow && a.pooled == nil {
		a.pooled, _ = textPool.Get().(*[]byte)
		if a.pooled == nil {
			a.pooled = new([]byte)
		}
		a.buf = (*a.pooled)[:0]
	}
	if a.first != nil {
		a.buf = append(a.buf, a.first...)
		a.first = nil
	}
}

// String returns the text.
func (a *textAcc) String() string {
	if a.first != nil {
		return string(a.first)
	}
	return string(a.buf)
}

// release hands a pooled buffer back; the accumulator must not be used
// afterwards.
func (a *textAcc) release() {
	if a.pooled != nil && cap(a.buf) <= retainBytes {
		*a.pooled = a.buf[:0]
		textPool.Put(a.pooled)
	}
	a.pooled, a.buf, a.first = nil, nil, nil
}

func (a *textAcc) reset(limit int) {
	a.buf, a.first, a.scratch = a.buf[:0], nil, a.scratch[:0]
	a.max, a.total, a.truncated = max(limit, 0), 0, false
	if cap(a.buf) > retainBytes {
		a.buf = nil
	}
	if cap(a.scratch) > retainBytes {
		a.scratch = nil
	}
}

// textPool holds the text buffers of ParseResponse, each at most
// retainBytes.
var textPool sync.Pool
