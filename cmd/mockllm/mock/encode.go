package mock

import (
	"strconv"
	"unicode/utf8"
)

// This file holds the append-style JSON helpers the hot path uses instead of
// encoding/json: fixed parts of each body are string constants and only the
// variable parts (ids, numbers, the echoed model) are encoded per request.

// appendJSONString appends s to dst as a JSON string literal. It escapes
// quotes, backslashes, control characters, U+2028 and U+2029, and replaces
// invalid UTF-8 with U+FFFD, like encoding/json without HTML escaping.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendID appends prefix followed by n as a zero-padded 12-digit decimal,
// e.g. "chatcmpl-mock-000000000042".
func appendID(dst []byte, prefix string, n uint64) []byte {
	dst = append(dst, prefix...)
	var digits [20]byte
	d := strconv.AppendUint(digits[:0], n, 10)
	for range 12 - len(d) {
		dst = append(dst, '0')
	}
	return append(dst, d...)
}

// appendInt appends the decimal form of n.
func appendInt(dst []byte, n int) []byte {
	return strconv.AppendInt(dst, int64(n), 10)
}
