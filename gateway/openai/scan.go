package openai

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/bits"
	"unicode/utf16"
	"unicode/utf8"
)

// This file holds the JSON scanning primitives. They find where values begin
// and end without building a tree and without recursion, so their stack use
// is constant however deep the input nests; they track nesting depth and stop
// at MaxNestingDepth. skipValue does not validate; validValue (validate.go)
// is its strict twin, and an objIter with strict set uses it.
//
// Why not fastjson here: its Parser builds a tree (a Value per element, kept
// by the parser for reuse, so one huge input pins memory), and its Validate
// recurses once per nesting level with no limit, so a few megabytes of "["
// would need gigabytes of stack, a fatal error rather than a panic.

var (
	errTooDeep = errors.New("nesting too deep")
	errSyntax  = errors.New("malformed JSON")
)

// skipWS returns the index of the first byte at or after i that is not JSON
// whitespace, or len(b).
func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the index just past the closing quote of the string
// whose opening quote is b[i], or -1 if the string is not terminated, and
// whether the string may contain escapes (it never misses one).
//
// Short strings, most keys and values in requests and chunks, are scanned
// eight bytes at a time for '"' or '\\'; after 64 bytes the vectorized
// IndexByte takes over, a quote then ending the string unless an odd number
// of backslashes precedes it.
func skipString(b []byte, i int) (end int, esc bool) {
	i++
	n := min(len(b), i+64)
	for i+8 <= n {
		w := binary.LittleEndian.Uint64(b[i:])
		q, e := w^quotes, w^bslshs
		m := ((q-ones)&^q | (e-ones)&^e) & highs
		if m == 0 {
			i += 8
			continue
		}
		// The lowest flagged byte is exact (borrows only run upwards).
		i += bits.TrailingZeros64(m) / 8
		if b[i] == '"' {
			return i + 1, esc
		}
		esc = true
		i += 2 // the backslash and the byte it escapes
	}
	for ; i < n; i++ { // the last few bytes of the first 64
		switch b[i] {
		case '"':
			return i + 1, esc
		case '\\':
			esc = true
			i++
		}
	}
	if i >= len(b) {
		return -1, esc
	}
	start := i
	for {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return -1, esc
		}
		j += i
		k := j
		for k > i && b[k-1] == '\\' { // every byte before i is consumed
			k--
		}
		if (j-k)%2 == 0 {
			return j + 1, esc || bytes.IndexByte(b[start:j], '\\') >= 0
		}
		i = j + 1
	}
}

// structural marks the bytes skipValue stops at inside a container.
var structural = [256]bool{'"': true, '{': true, '[': true, '}': true, ']': true, ',': true}

// skipValue returns the end (exclusive) of the JSON value starting at b[i],
// which must not be whitespace, and for an array or object the number of its
// elements or members. depth is the nesting depth of the container holding
// the value (1 for a member of the top-level object); a value nesting beyond
// MaxNestingDepth fails with errTooDeep. Brackets are counted, not matched:
// "[}" passes, which is why callers needing validity also validate.
func skipValue(b []byte, i, depth int) (end, count int, err error) {
	switch b[i] {
	case '"':
		e, _ := skipString(b, i)
		if e < 0 {
			return 0, 0, errSyntax
		}
		return e, 0, nil
	case '{', '[':
		if depth+1 > MaxNestingDepth {
			return 0, 0, errTooDeep
		}
		first := skipWS(b, i+1)
		if first == len(b) {
			return 0, 0, errSyntax
		}
		empty := b[first] == '}' || b[first] == ']'
		d, commas := 1, 0
		for j := i + 1; ; j++ {
			for j < len(b) && !structural[b[j]] {
				j++
			}
			if j == len(b) {
				return 0, 0, errSyntax
			}
			switch b[j] {
			case '"':
				e, _ := skipString(b, j)
				if e < 0 {
					return 0, 0, errSyntax
				}
				j = e - 1
			case '{', '[':
				d++
				if depth+d > MaxNestingDepth {
					return 0, 0, errTooDeep
				}
			case '}', ']':
				d--
				if d == 0 {
					if !empty {
						count = commas + 1
					}
					return j + 1, count, nil
				}
			case ',':
				if d == 1 {
					commas++
				}
			}
		}
	default:
		j := i
		for j < len(b) && !structural[b[j]] && b[j] > ' ' {
			j++
		}
		if j == i {
			return 0, 0, errSyntax
		}
		return j, 0, nil
	}
}

// objIter iterates over the members of one JSON object without allocating.
// Use newObjIter (or the object method of an iterator, to descend), then
// call next until it reports false, then check err.
//
// next reads a member whole. To descend into a member's value without
// scanning it twice, call key instead, then either value (to skip it) or
// object/array to get an iterator over it; once that is iterated to its end,
// resume this one after it. Iterators hold no pointers to each other, so
// they stay on the stack.
type objIter struct {
	b      []byte
	i      int // next position to read
	depth  int // nesting depth of the object itself
	first  bool
	done   bool
	strict bool // validate keys and values, as validValue does
	err    error

	keyEsc bool // the last key may contain escapes
	valAt  int  // index of the first byte of the last value
	count  int  // element count of the last value, if a container read by next
}

// newObjIter returns an iterator over the object whose '{' is b[open]; depth
// is that object's nesting depth (1 for a top-level object).
func newObjIter(b []byte, open, depth int) objIter {
	return objIter{b: b, i: open + 1, depth: depth, first: true}
}

// next returns the raw key (between the quotes, escapes intact) and the raw
// value of the next member. After the last member it reports false with err
// nil and it.i just past the closing '}'.
func (it *objIter) next() (key, val []byte, ok bool) {
	if key, ok = it.key(); !ok {
		return nil, nil, false
	}
	val, ok = it.value()
	return key, val, ok
}

// key reads the next key and the colon after it, leaving it.i at the value
// (it.valAt), which the caller must then consume with value, object or
// array.
func (it *objIter) key() (key []byte, ok bool) {
	if it.done || it.err != nil {
		return nil, false
	}
	b := it.b
	i := skipWS(b, it.i)
	if i < len(b) && b[i] == '}' {
		it.done, it.i = true, i+1
		return nil, false
	}
	if !it.first {
		if i >= len(b) || b[i] != ',' {
			return nil, it.fail(errSyntax)
		}
		i = skipWS(b, i+1)
	}
	it.first = false
	if i >= len(b) || b[i] != '"' {
		return nil, it.fail(errSyntax)
	}
	var ke int
	var esc bool
	if it.strict {
		ke, esc = validString(b, i), true
	} else {
		ke, esc = skipString(b, i)
	}
	if ke < 0 {
		return nil, it.fail(errSyntax)
	}
	it.keyEsc = esc
	key = b[i+1 : ke-1]
	i = skipWS(b, ke)
	if i >= len(b) || b[i] != ':' {
		return nil, it.fail(errSyntax)
	}
	i = skipWS(b, i+1)
	if i >= len(b) {
		return nil, it.fail(errSyntax)
	}
	it.valAt, it.i = i, i
	return key, true
}

// name returns key, the last key read, with escapes decoded; it allocates
// only if the key has escapes.
func (it *objIter) name(key []byte) []byte {
	if !it.keyEsc {
		return key
	}
	return keyName(key)
}

// value skips the value at it.i and returns it raw.
func (it *objIter) value() ([]byte, bool) {
	skip := skipValue
	if it.strict {
		skip = validValue
	}
	end, n, err := skip(it.b, it.i, it.depth)
	if err != nil {
		return nil, it.fail(err)
	}
	it.count, it.i = n, end
	return it.b[it.valAt:end], true
}

// object returns an iterator over the object value at it.i, or false if the
// value is not an object (then consume it with value). Iterate it to its
// end, then call resume with its position and error.
func (it *objIter) object() (objIter, bool) {
	if it.b[it.i] != '{' {
		return objIter{}, false
	}
	return newObjIter(it.b, it.i, it.depth+1), true
}

// array is object for an array value.
func (it *objIter) array() (arrIter, bool) {
	if it.b[it.i] != '[' {
		return arrIter{}, false
	}
	return newArrIter(it.b, it.i, it.depth+1), true
}

// resume continues after a value iterated by a descended iterator that
// ended at end with err.
func (it *objIter) resume(end int, err error) {
	it.i = end
	if err != nil && it.err == nil {
		it.err = err
	}
}

func (it *objIter) fail(err error) bool {
	it.err = err
	return false
}

// arrIter iterates over the elements of one JSON array as objIter does over
// members: next reads an element whole; elem moves to the next element for
// value or object.
type arrIter struct {
	b     []byte
	i     int
	depth int
	first bool
	done  bool
	err   error
	valAt int
}

// newArrIter returns an iterator over the array whose '[' is b[open]; depth
// is the array's nesting depth.
func newArrIter(b []byte, open, depth int) arrIter {
	return arrIter{b: b, i: open + 1, depth: depth, first: true}
}

// next returns the raw next element; after the last it reports false with
// err nil.
func (it *arrIter) next() ([]byte, bool) {
	if !it.elem() {
		return nil, false
	}
	return it.value()
}

// elem moves to the next element, leaving it.i at it; false after the last.
func (it *arrIter) elem() bool {
	if it.done || it.err != nil {
		return false
	}
	b := it.b
	i := skipWS(b, it.i)
	if i < len(b) && b[i] == ']' {
		it.done, it.i = true, i+1
		return false
	}
	if !it.first {
		if i >= len(b) || b[i] != ',' {
			return it.fail(errSyntax)
		}
		i = skipWS(b, i+1)
	}
	it.first = false
	if i >= len(b) {
		return it.fail(errSyntax)
	}
	it.valAt, it.i = i, i
	return true
}

// value skips the element at it.i and returns it raw.
func (it *arrIter) value() ([]byte, bool) {
	end, _, err := skipValue(it.b, it.i, it.depth)
	if err != nil {
		return nil, it.fail(err)
	}
	it.i = end
	return it.b[it.valAt:end], true
}

// object returns an iterator over the object element at it.i, or false if
// the element is not an object; as objIter.object.
func (it *arrIter) object() (objIter, bool) {
	if it.b[it.i] != '{' {
		return objIter{}, false
	}
	return newObjIter(it.b, it.i, it.depth+1), true
}

// resume is objIter.resume.
func (it *arrIter) resume(end int, err error) {
	it.i = end
	if err != nil && it.err == nil {
		it.err = err
	}
}

func (it *arrIter) fail(err error) bool {
	it.err = err
	return false
}

// keyName returns raw, the bytes of an object key between its quotes, with
// escapes decoded. It allocates only when raw contains a backslash.
func keyName(raw []byte) (name []byte) {
	name, _ = unquote(raw)
	return name
}

// unquote returns raw, the bytes of a JSON string between its quotes, with
// escapes decoded; exact is false if decoding had to replace a malformed
// escape or a lone surrogate. It allocates only when raw contains a
// backslash.
func unquote(raw []byte) (s []byte, exact bool) {
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw, true
	}
	return appendUnquoted(nil, raw)
}

// appendUnquoted appends the decoded form of raw, the bytes of a JSON string
// between its quotes, to dst. It is lenient, reporting exact false: a
// malformed escape is copied as is, and a lone surrogate becomes U+FFFD.
func appendUnquoted(dst, raw []byte) (_ []byte, exact bool) {
	exact = true
	for len(raw) > 0 {
		n := bytes.IndexByte(raw, '\\')
		if n < 0 {
			return append(dst, raw...), exact
		}
		dst = append(dst, raw[:n]...)
		raw = raw[n:]
		if len(raw) < 2 {
			return append(dst, raw...), false
		}
		switch c := raw[1]; c {
		case '"', '\\', '/':
			dst = append(dst, c)
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, ok := hex4(raw[2:])
			if !ok {
				dst = append(dst, raw[:2]...)
				raw = raw[2:]
				exact = false
				continue
			}
			raw = raw[6:]
			if utf16.IsSurrogate(r) {
				r2, ok := rune(0), false
				if len(raw) >= 6 && raw[0] == '\\' && raw[1] == 'u' {
					r2, ok = hex4(raw[2:])
				}
				if dec := utf16.DecodeRune(r, r2); ok && dec != utf8.RuneError {
					r = dec
					raw = raw[6:]
				} else {
					r, exact = utf8.RuneError, false
				}
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default:
			dst = append(dst, raw[:2]...)
			exact = false
		}
		raw = raw[2:]
	}
	return dst, exact
}

// hex4 decodes four hex digits at the start of b.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
