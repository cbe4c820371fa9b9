package openai

import (
	"unicode"
	"unicode/utf8"
)

// Upstreams written in Go decode a request body into structs, and
// encoding/json matches a member name to a field case-insensitively, with
// simple Unicode case folding (bytes.EqualFold): "MODEL", "Model" and
// "\u212Aey" (Kelvin sign) name the fields "model" and "key". Such an
// upstream would act on a member the gateway did not read, or, beside the
// exact twin, on whichever comes last. ParseRequest therefore refuses every
// member whose name folds to one of the names below without being it.

// foldedMembers maps the folded form (see foldName) of each top-level member
// the gateway reads, or whose value bounds what upstream generates and
// charges, to its exact name. It is read-only.
var foldedMembers = foldTable(
	"model", "stream", "stream_options", "messages", "prompt", "input", "instructions",
	"max_tokens", "max_completion_tokens", "max_output_tokens", "n", "user",
)

// foldedIncludeUsage is the folded form of stream_options.include_usage.
const foldedIncludeUsage = "INCLUDE_USAGE"

// maxFoldedName is longer than every name the tables hold, so that a
// longer name is rejected before it is looked up.
const maxFoldedName = 32

func foldTable(names ...string) map[string]string {
	m := make(map[string]string, len(names))
	for _, n := range names {
		var buf [maxFoldedName]byte
		f, ok := foldName(buf[:0], []byte(n))
		if !ok {
			panic("openai: member name " + n + " does not fold to ASCII")
		}
		m[string(f)] = n
	}
	return m
}

// foldName appends to dst name folded as encoding/json folds member names:
// ASCII letters upper-case, any other rune to the smallest rune of its
// simple case-folding orbit (the Kelvin sign to 'K', the long s to 'S').
// It reports false, early, if a rune folds to a non-ASCII rune or the result
// would be longer than maxFoldedName: no name of the tables matches then.
func foldName(dst, name []byte) ([]byte, bool) {
	for i := 0; i < len(name); {
		if len(dst) == maxFoldedName {
			return dst, false
		}
		c := name[i]
		if c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			dst = append(dst, c)
			i++
			continue
		}
		r, n := utf8.DecodeRune(name[i:])
		if r = foldRune(r); r >= utf8.RuneSelf {
			return dst, false
		}
		dst = append(dst, byte(r))
		i += n
	}
	return dst, true
}

// foldRune returns the smallest rune of r's simple case-folding orbit, as
// encoding/json's does.
func foldRune(r rune) rune {
	for {
		r2 := unicode.SimpleFold(r)
		if r2 <= r {
			return r2
		}
		r = r2
	}
}

// misspelled reports the exact name of the interpreted member that name,
// a top-level member name with escapes decoded, is a case variant of; ""
// if it is none (an exact name included).
func misspelled(name []byte) string {
	if !mayFold(name) {
		return ""
	}
	var buf [maxFoldedName]byte
	f, ok := foldName(buf[:0], name)
	if !ok {
		return ""
	}
	if canon, ok := foldedMembers[string(f)]; ok && canon != string(name) {
		return canon
	}
	return ""
}

// mayFold reports whether name holds an upper-case ASCII letter or a
// non-ASCII byte. A name without either folds to one of the (lower-case
// ASCII) table names only by being it: the fast path of most members.
func mayFold(name []byte) bool {
	for _, c := range name {
		if c-'A' < 26 || c >= utf8.RuneSelf {
			return true
		}
	}
	return false
}

// misspelledIncludeUsage reports whether name, a member name of
// stream_options, is a case variant of include_usage.
func misspelledIncludeUsage(name []byte) bool {
	if !mayFold(name) {
		return false
	}
	var buf [maxFoldedName]byte
	f, ok := foldName(buf[:0], name)
	return ok && string(f) == foldedIncludeUsage && string(name) != "include_usage"
}

// caseVariantError refuses the member named name (its path, as the caller
// spelled it), which folds to the member canon.
func caseVariantError(name, canon string) *RequestError {
	return &RequestError{Param: name, Msg: "unrecognized request argument '" + name +
		"': parameter names are case-sensitive (did you mean '" + canon + "'?)"}
}
