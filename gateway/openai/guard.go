package openai

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"unicode/utf16"
	"unicode/utf8"
)

// Redacted replaces a secret that Secrets.Redact removes.
const Redacted = "[redacted]"

// ErrSecret is returned by StreamTee.Write and Flush once the stream would
// have delivered a secret of the tee's Secrets; see StreamTee.SetSecrets.
var ErrSecret = errors.New("openai: the stream carries a secret")

// Secrets is a set of byte strings (the gateway's provider credentials) that
// must never pass through whole: as they are, JSON-escaped (any character
// as \uXXXX, or a short escape such as \/), or, in a stream, spread over
// the text of several events. It is immutable and safe for concurrent use;
// a nil *Secrets holds none.
type Secrets struct {
	list    []secret
	escapes [][]byte // escape prefixes that can spell a character of a secret: `\u`, and `\/` etc. for those it holds
	window  int      // bytes that can hold one secret, escaped: a stream's oversized events are checked across pieces this far
}

type secret struct {
	b    []byte
	s    string // b, for decoded text
	fail []int  // KMP failure function: fail[k] is the longest proper border of b[:k+1]
	// A stream withholds its events while the text so far ends in hold or
	// more bytes of the start of b, until the text goes elsewhere (the
	// events are released) or completes b (they are never sent).
	hold int
}

// maxHold bounds secret.hold: the text a stream delivers before withholding
// holds at most maxHold-1 bytes of a secret's start, enough for key formats'
// public prefixes ("sk-ant-api03-") plus a few characters, so that an
// ordinary mention of a key format is delayed, never cut.
const maxHold = 16

// MinSecretLen is the length below which NewSecrets ignores a string: a
// shorter one is no credential worth guarding, and every answer that
// happened to hold it would be cut.
const MinSecretLen = 8

// NewSecrets returns the set of the secrets given of at least MinSecretLen
// bytes, or nil if there are none.
func NewSecrets(secrets ...string) *Secrets {
	s := &Secrets{escapes: [][]byte{[]byte(`\u`)}}
	seen := map[string]bool{}
	short := map[byte]bool{}
	for _, v := range secrets {
		if len(v) < MinSecretLen || seen[v] {
			continue
		}
		seen[v] = true
		b := []byte(v)
		s.list = append(s.list, secret{b: b, s: v, fail: kmpFailure(b), hold: min(maxHold, max(1, len(b)/2))})
		s.window = max(s.window, 6*len(b)) // escaped, a byte takes at most 6 (\uXXXX; a surrogate pair, 12, spells 4)
		for i := 0; i < len(b); i++ {
			if e, ok := shortEscape(b[i]); ok && !short[e] {
				short[e] = true
				s.escapes = append(s.escapes, []byte{'\\', e})
			}
		}
	}
	if len(s.list) == 0 {
		return nil
	}
	return s
}

// shortEscape returns the letter of c's two-byte JSON escape, if it has one.
func shortEscape(c byte) (byte, bool) {
	switch c {
	case '"', '\\', '/':
		return c, true
	case '\b':
		return 'b', true
	case '\f':
		return 'f', true
	case '\n':
		return 'n', true
	case '\r':
		return 'r', true
	case '\t':
		return 't', true
	}
	return 0, false
}

func kmpFailure(b []byte) []int {
	f := make([]int, len(b))
	for i, k := 1, 0; i < len(b); i++ {
		for k > 0 && b[i] != b[k] {
			k = f[k-1]
		}
		if b[i] == b[k] {
			k++
		}
		f[i] = k
	}
	return f
}

// Contains reports whether b holds one of the secrets, as is or
// JSON-escaped. It is cheap when b holds no escape sequence that could
// spell a secret's character: one bytes.Contains per secret and per such
// escape; otherwise it decodes b once into a pooled buffer.
func (s *Secrets) Contains(b []byte) bool {
	if s == nil {
		return false
	}
	for i := range s.list {
		if bytes.Contains(b, s.list[i].b) {
			return true
		}
	}
	return s.escapedIn(b)
}

// escapedIn reports whether the JSON-decoded form of b holds a secret that
// b itself (checked by the caller) does not.
func (s *Secrets) escapedIn(b []byte) bool {
	if !s.mayEscape(b) {
		return false
	}
	p := decodePool.Get().(*[]byte)
	d, _ := appendUnquoted((*p)[:0], b)
	found := false
	for i := range s.list {
		if bytes.Contains(d, s.list[i].b) {
			found = true
			break
		}
	}
	if cap(d) <= retainBytes {
		*p = d[:0]
		decodePool.Put(p)
	}
	return found
}

var decodePool = sync.Pool{New: func() any { return new([]byte) }}

// mayEscape reports whether b holds an escape sequence that could spell a
// character of a secret.
func (s *Secrets) mayEscape(b []byte) bool {
	for _, e := range s.escapes {
		if bytes.Contains(b, e) {
			return true
		}
	}
	return false
}

// Redact returns b with every occurrence of a secret, as is or
// JSON-escaped, replaced by Redacted, and whether there was one. Without
// one it returns b itself; otherwise a new slice, b is not modified. A
// replaced escaped occurrence was inside a JSON string, so JSON stays valid.
func (s *Secrets) Redact(b []byte) ([]byte, bool) {
	if s == nil {
		return b, false
	}
	found := false
	for i := range s.list {
		if bytes.Contains(b, s.list[i].b) {
			b, found = bytes.ReplaceAll(b, s.list[i].b, []byte(Redacted)), true
		}
	}
	if !s.escapedIn(b) {
		return b, found
	}
	// Rare (an upstream echoing a credential escaped): find the raw spans.
	out := make([]byte, 0, len(b))
	last := 0
	for i := 0; i < len(b); {
		end := -1
		for k := range s.list {
			if end = matchEscaped(b, i, s.list[k].b); end > i {
				break
			}
		}
		if end <= i {
			i++
			continue
		}
		out = append(append(out, b[last:i]...), Redacted...)
		last, i = end, end
	}
	return append(out, b[last:]...), true
}

// RedactString is Redact for decoded text (a Result's Text): it replaces
// the secrets as they are.
func (s *Secrets) RedactString(text string) (string, bool) {
	if s == nil {
		return text, false
	}
	found := false
	for i := range s.list {
		if k := s.list[i].s; strings.Contains(text, k) {
			text, found = strings.ReplaceAll(text, k, Redacted), true
		}
	}
	return text, found
}

// matchEscaped returns the end of the JSON-encoded text at b[i:] that
// decodes to key, or -1.
func matchEscaped(b []byte, i int, key []byte) int {
	var rb [2 * utf8.UTFMax]byte
	for k := 0; k < len(key); {
		if i >= len(b) {
			return -1
		}
		if c := b[i]; c != '\\' {
			if c != key[k] {
				return -1
			}
			i, k = i+1, k+1
			continue
		}
		dec, n := decodeEscape(rb[:0], b[i:])
		if n == 0 || !bytes.HasPrefix(key[k:], dec) {
			return -1
		}
		i, k = i+n, k+len(dec)
	}
	return i
}

// decodeEscape appends the character of the JSON escape sequence at the
// start of b to dst and returns it with the sequence's length, 0 if b does
// not start with a valid one.
func decodeEscape(dst, b []byte) ([]byte, int) {
	if len(b) < 2 || b[0] != '\\' {
		return dst, 0
	}
	switch c := b[1]; c {
	case '"', '\\', '/':
		return append(dst, c), 2
	case 'b':
		return append(dst, '\b'), 2
	case 'f':
		return append(dst, '\f'), 2
	case 'n':
		return append(dst, '\n'), 2
	case 'r':
		return append(dst, '\r'), 2
	case 't':
		return append(dst, '\t'), 2
	case 'u':
		r, ok := hex4(b[2:])
		if !ok {
			return dst, 0
		}
		n := 6
		if utf16.IsSurrogate(r) && len(b) >= 12 && b[6] == '\\' && b[7] == 'u' {
			if r2, ok := hex4(b[8:]); ok {
				if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
					r, n = d, 12
				}
			}
		}
		return utf8.AppendRune(dst, r), n
	}
	return dst, 0
}

// scan advances st, the length of the longest start of s.b that the text
// so far ends in, over text; whole reports that the text completed s.b.
func (s *secret) scan(st int, text []byte) (_ int, whole bool) {
	b := s.b
	for i := 0; i < len(text); i++ {
		if st == 0 {
			j := bytes.IndexByte(text[i:], b[0])
			if j < 0 {
				return 0, false
			}
			i += j
			st = 1
		} else {
			c := text[i]
			for st > 0 && b[st] != c {
				st = s.fail[st-1]
			}
			if b[st] == c {
				st++
			}
		}
		if st == len(b) {
			return s.fail[st-1], true
		}
	}
	return st, false
}

// verdict says what a StreamTee does with one complete event.
type verdict uint8

const (
	pass     verdict = iota // forward it (after any withheld events)
	drop                    // consume it: the injected usage chunk
	withhold                // keep it back: the text so far ends in the start of a secret
	block                   // it would complete a secret: forward nothing more
)

// SetSecrets makes t refuse to pass on secrets (nil: none; Reset clears
// it). Each event is checked before it is forwarded: if its bytes hold a
// secret (as is or JSON-escaped), or its text (delta content, as the
// client assembles it) completes one, neither it nor anything after it is
// forwarded, Write and Flush return ErrSecret, and Result keeps only the
// text of the events forwarded.
//
// A secret can be spread over events one character at a time, and an event
// cannot be taken back once sent; so while the text ends in the start of a
// secret (at least maxHold bytes of it, or half a short one), t withholds
// the events, and releases them once the text goes elsewhere. What reaches
// the client of a secret is thus at most such a start, never all of it. A
// stream that ends, or whose withheld events outgrow MaxEventBytes, while
// withholding is treated as carrying the secret.
//
// Oversized events, forwarded unparsed, are checked as bytes only, across
// the pieces they are forwarded in. Text the tee does not assemble (tool
// call arguments, reasoning) is checked per event, not across events.
func (t *StreamTee) SetSecrets(s *Secrets) {
	t.guard = s
	t.states = t.states[:0]
	if s != nil {
		t.states = append(t.states, make([]int, len(s.list))...)
	}
}

// guardedText advances the secrets' match states over a piece of response
// text, raw the JSON string (quotes included) it was decoded from.
func (t *StreamTee) guardedText(raw []byte) {
	if len(raw) < 2 || raw[0] != '"' {
		return
	}
	text := raw[1 : len(raw)-1]
	if bytes.IndexByte(text, '\\') >= 0 {
		t.decoded, _ = appendUnquoted(t.decoded[:0], text)
		text = t.decoded
	}
	for i := range t.guard.list {
		st, whole := t.guard.list[i].scan(t.states[i], text)
		t.states[i] = st
		t.whole = t.whole || whole
	}
}

// judge turns the verdict v of learning from an event into the guarded one.
func (t *StreamTee) judge(v verdict) verdict {
	switch {
	case t.whole:
		return block
	case v == drop:
		return drop
	}
	for i := range t.guard.list {
		if t.states[i] >= t.guard.list[i].hold {
			return withhold
		}
	}
	t.mark = t.text.mark() // the event will be forwarded: its text is delivered
	return pass
}

// settle carries out the verdict v on the complete event ev.
func (t *StreamTee) settle(ev []byte, v verdict, w *sink) {
	switch v {
	case pass:
		if len(t.withheld) > 0 {
			w.send(t.withheld)
			t.withheld = t.withheld[:0]
		}
		w.send(ev)
	case withhold:
		if len(t.withheld)+len(ev) > MaxEventBytes {
			t.block()
			return
		}
		t.withheld = append(t.withheld, ev...)
	case block:
		t.block()
	}
}

// sendRaw forwards b, a piece of an oversized event, unless it (with the
// pieces before it) completes a secret or events are withheld before it.
func (t *StreamTee) sendRaw(b []byte, w *sink) {
	if t.guard != nil && len(b) > 0 {
		if len(t.withheld) > 0 || t.guard.Contains(b) || t.seamLeaks(b) {
			t.block()
			return
		}
		t.rawTail = appendTail(t.rawTail, b, t.guard.window)
	}
	w.send(b)
}

// seamLeaks reports whether a secret spans the bytes forwarded before b
// (rawTail) and b.
func (t *StreamTee) seamLeaks(b []byte) bool {
	if len(t.rawTail) == 0 {
		return false
	}
	t.decoded = append(append(t.decoded[:0], t.rawTail...), b[:min(len(b), t.guard.window)]...)
	return t.guard.Contains(t.decoded)
}

// appendTail returns the last n bytes of tail followed by b.
func appendTail(tail, b []byte, n int) []byte {
	if len(b) >= n {
		return append(tail[:0], b[len(b)-n:]...)
	}
	if drop := len(tail) + len(b) - n; drop > 0 {
		tail = tail[:copy(tail, tail[drop:])]
	}
	return append(tail, b...)
}

// block stops the stream: nothing more is forwarded, and the text is what
// the forwarded events carried.
func (t *StreamTee) block() {
	t.blocked = true
	t.withheld = t.withheld[:0]
	t.text.restore(t.mark)
}

// textMark is the state of a textAcc to return to.
type textMark struct {
	n, total  int
	truncated bool
}

func (a *textAcc) mark() textMark { return textMark{len(a.buf), a.total, a.truncated} }

func (a *textAcc) restore(m textMark) {
	a.buf, a.total, a.truncated = a.buf[:m.n], m.total, m.truncated
}
