package openai

import (
	"encoding/binary"
	"math/bits"
)

// This file holds the validating scanner: skipValue's strict twin, used
// where the gateway must refuse invalid JSON (request bodies). It accepts
// exactly RFC 8259 JSON, as encoding/json.Valid does, except that it does
// not check UTF-8 (ParseRequest does, separately) and it stops at
// MaxNestingDepth. It is iterative, with the container stack in a bit set,
// so its stack use is constant and its time linear.

// SWAR constants: eight bytes compared at once.
const (
	ones   = 0x0101010101010101
	highs  = 0x8080808080808080
	quotes = ones * '"'
	bslshs = ones * '\\'
	spaces = ones * 0x20
)

// validString returns the index just past the closing quote of the string
// whose opening quote is b[i], or -1 if the string is not valid JSON: it
// must be terminated, hold no control character below 0x20, and use only
// the escapes \" \\ \/ \b \f \n \r \t and \uXXXX.
func validString(b []byte, i int) int {
	i++
	for {
		for i+8 <= len(b) {
			w := binary.LittleEndian.Uint64(b[i:])
			q, e := w^quotes, w^bslshs
			// Flags '"', '\\' and bytes below 0x20; the lowest flag is exact.
			m := ((q-ones)&^q | (e-ones)&^e | (w-spaces)&^w) & highs
			if m != 0 {
				i += bits.TrailingZeros64(m) / 8
				break
			}
			i += 8
		}
		if i >= len(b) {
			return -1
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1
		case c == '\\':
			if i+1 >= len(b) {
				return -1
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if _, ok := hex4(b[min(i+2, len(b)):]); !ok {
					return -1
				}
				i += 6
			default:
				return -1
			}
		case c < 0x20:
			return -1
		default:
			i++ // an ordinary byte in the last seven
		}
	}
}

// validNumber returns the end of the JSON number starting at b[i], or -1.
// What may follow it is the caller's to check.
func validNumber(b []byte, i int) int {
	if b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return -1
	case b[i] == '0':
		i++
	case b[i] >= '1' && b[i] <= '9':
		i = digits(b, i+1)
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return -1
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return -1
		}
		i = j
	}
	return i
}

func digits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

// validKey reads an object key and its colon at b[i] (after whitespace) and
// returns the index of the member's value.
func validKey(b []byte, i int) (int, error) {
	if i >= len(b) || b[i] != '"' {
		return 0, errSyntax
	}
	if i = validString(b, i); i < 0 {
		return 0, errSyntax
	}
	i = skipWS(b, i)
	if i >= len(b) || b[i] != ':' {
		return 0, errSyntax
	}
	i = skipWS(b, i+1)
	if i >= len(b) {
		return 0, errSyntax
	}
	return i, nil
}

// validValue is the validating skipValue: it returns the end of the valid
// JSON value starting at b[i] (not whitespace) and, for an array or object,
// its element count; depth is that of the container holding the value.
// Invalid JSON fails with errSyntax, nesting beyond MaxNestingDepth with
// errTooDeep.
func validValue(b []byte, i, depth int) (end, count int, err error) {
	var (
		isObj  [(MaxNestingDepth + 63) / 64]uint64 // bit l: the container at level l is an object
		level  int                                 // containers open within this value
		commas int                                 // separators of the outermost container
		items  bool                                // the outermost container has an element
	)
value:
	for {
		// b[i] starts a value.
		if level == 1 {
			items = true
		}
		switch c := b[i]; c {
		case '"':
			if i = validString(b, i); i < 0 {
				return 0, 0, errSyntax
			}
		case '{', '[':
			if depth+level+1 > MaxNestingDepth {
				return 0, 0, errTooDeep
			}
			if c == '{' {
				isObj[level/64] |= 1 << (level % 64)
			} else {
				isObj[level/64] &^= 1 << (level % 64)
			}
			level++
			i = skipWS(b, i+1)
			if i >= len(b) {
				return 0, 0, errSyntax
			}
			if c == '{' && b[i] == '}' || c == '[' && b[i] == ']' {
				level--
				i++
				break
			}
			if c == '{' {
				if i, err = validKey(b, i); err != nil {
					return 0, 0, err
				}
			}
			continue value
		case 't':
			if !hasPrefix(b[i:], "true") {
				return 0, 0, errSyntax
			}
			i += 4
		case 'f':
			if !hasPrefix(b[i:], "false") {
				return 0, 0, errSyntax
			}
			i += 5
		case 'n':
			if !hasPrefix(b[i:], "null") {
				return 0, 0, errSyntax
			}
			i += 4
		default:
			if i = validNumber(b, i); i < 0 {
				return 0, 0, errSyntax
			}
		}
		// A value ended at i: close containers or move to the next value.
		for {
			if level == 0 {
				if items {
					count = commas + 1
				}
				return i, count, nil
			}
			i = skipWS(b, i)
			if i >= len(b) {
				return 0, 0, errSyntax
			}
			obj := isObj[(level-1)/64]&(1<<((level-1)%64)) != 0
			switch b[i] {
			case ',':
				if level == 1 {
					commas++
				}
				i = skipWS(b, i+1)
				if i >= len(b) {
					return 0, 0, errSyntax
				}
				if obj {
					if i, err = validKey(b, i); err != nil {
						return 0, 0, err
					}
				}
				continue value
			case '}':
				if !obj {
					return 0, 0, errSyntax
				}
			case ']':
				if obj {
					return 0, 0, errSyntax
				}
			default:
				return 0, 0, errSyntax
			}
			level--
			i++
		}
	}
}

func hasPrefix(b []byte, s string) bool {
	return len(b) >= len(s) && string(b[:len(s)]) == s
}
