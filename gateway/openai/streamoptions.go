package openai

import "errors"

// WithStreamUsage makes a streaming ChatCompletions or Completions request
// body ask upstream for token usage: when "stream" is true and
// "stream_options.include_usage" is not, it returns a copy of body in which
// stream_options.include_usage is true, with every other byte as sent, and
// injected true. Otherwise it returns body itself and false. The proxy then
// builds its StreamTee with dropUsageChunk set to injected, so the caller
// never sees the usage chunk it did not ask for.
//
// Edits are splices, never a re-encoding: with no "stream_options" member,
// `"stream_options":{"include_usage":true},` is inserted right after the
// opening brace; a null stream_options is replaced by that object; an
// object without include_usage gets `"include_usage":true` as its first
// member (other members kept); an include_usage of false or null is replaced
// by true. No key is ever duplicated: a body that already repeats "stream",
// "stream_options" or include_usage is refused.
//
// Call it only for endpoints whose Endpoint.StreamUsageOptIn is true, after
// ParseRequest has accepted body: it checks only the structure it edits
// (failing with a *RequestError) and does not validate the rest. It
// allocates once, len(body)+40 bytes, when it injects, and not otherwise. It
// is safe for concurrent use.
func WithStreamUsage(body []byte) (out []byte, injected bool, err error) {
	open := skipWS(body, 0)
	if open == len(body) || body[open] != '{' {
		return body, false, errNotObject
	}
	var (
		stream, opts field
		optsAt       int // index of the stream_options value
	)
	it := newObjIter(body, open, 1)
	for {
		k, v, ok := it.next()
		if !ok {
			break
		}
		var f *field
		switch string(it.name(k)) {
		case "stream":
			f = &stream
		case "stream_options":
			f, optsAt = &opts, it.valAt
		default:
			continue
		}
		if f.seen {
			name := string(keyName(k))
			return body, false, &RequestError{Param: name, Msg: "'" + name + "' is given more than once"}
		}
		f.seen, f.val = true, v
	}
	if it.err != nil {
		if errors.Is(it.err, errTooDeep) {
			return body, false, errDeep
		}
		return body, false, errNotJSON
	}
	if string(stream.val) != "true" {
		return body, false, nil
	}

	switch {
	case !opts.seen:
		return insertMember(body, open, `"stream_options":{"include_usage":true}`), true, nil
	case string(opts.val) == "null":
		return splice(body, optsAt, optsAt+len(opts.val), `{"include_usage":true}`), true, nil
	case opts.val[0] != '{':
		return body, false, &RequestError{Param: "stream_options", Msg: "'stream_options' must be an object"}
	}
	var usage field
	usageAt := 0
	it = newObjIter(body, optsAt, 2)
	for {
		k, v, ok := it.next()
		if !ok {
			break
		}
		if string(it.name(k)) != "include_usage" {
			continue
		}
		if usage.seen {
			return body, false, &RequestError{Param: "stream_options.include_usage", Msg: "'stream_options.include_usage' is given more than once"}
		}
		usage.seen, usage.val, usageAt = true, v, it.valAt
	}
	if it.err != nil {
		return body, false, errNotJSON
	}
	switch {
	case !usage.seen:
		return insertMember(body, optsAt, `"include_usage":true`), true, nil
	case string(usage.val) == "true":
		return body, false, nil
	case string(usage.val) == "false" || string(usage.val) == "null":
		return splice(body, usageAt, usageAt+len(usage.val), "true"), true, nil
	default:
		return body, false, &RequestError{Param: "stream_options.include_usage", Msg: "'stream_options.include_usage' must be a boolean"}
	}
}

// insertMember returns a copy of body with member inserted as the first
// member of the object whose '{' is body[open], followed by a comma unless
// the object is empty.
func insertMember(body []byte, open int, member string) []byte {
	comma := body[skipWS(body, open+1)] != '}'
	out := make([]byte, 0, len(body)+len(member)+1)
	out = append(out, body[:open+1]...)
	out = append(out, member...)
	if comma {
		out = append(out, ',')
	}
	return append(out, body[open+1:]...)
}

// splice returns a copy of body with body[from:to] replaced by s.
func splice(body []byte, from, to int, s string) []byte {
	out := make([]byte, 0, len(body)-(to-from)+len(s))
	out = append(out, body[:from]...)
	out = append(out, s...)
	return append(out, body[to:]...)
}
