package openai

import (
	"bytes"
	"sync"

	"github.com/valyala/fastjson"
)

// MaxEventBytes bounds one server-sent event as the StreamTee sees it. An
// event that grows past it while incomplete is forwarded as far as it has
// arrived, then the rest of it as it arrives, and it is never parsed (nor
// dropped); a complete event longer than MaxEventBytes is forwarded unparsed
// too. Each such event counts in StreamStats.Oversized. Text or usage it
// carried are lost to the record, never to the client.
const MaxEventBytes = 1 << 20

// retainBytes bounds the buffers a StreamTee keeps across Reset.
const retainBytes = 64 << 10

// StreamStats counts what a StreamTee saw in one stream.
type StreamStats struct {
	Events    int // complete events seen, including dropped and oversized ones
	Dropped   int // usage-only chunks consumed and not forwarded
	Oversized int // events forwarded unparsed because they exceeded MaxEventBytes
	Malformed int // data payloads that were not a JSON object (forwarded unchanged)
}

// StreamTee copies one upstream server-sent event stream to the client while
// learning from it, without re-encoding anything. The proxy hands it the
// upstream bytes as they arrive (Write), in chunks split anywhere, even
// inside a line ending or a UTF-8 rune; the tee passes each event on as soon
// as its terminating blank line has arrived (a line ending is "\r\n", "\n"
// or "\r", as the SSE specification has it) and, at the end, whatever is
// left (Flush).
//
// From each event's data payload it learns the response text, the finish
// reason and the usage (see Write), and with dropUsageChunk it consumes the
// usage-only chat chunk that WithStreamUsage asked upstream for. Every byte
// it does not drop is forwarded unchanged and in order; a malformed payload
// is forwarded and ignored.
//
// Memory is bounded: at most MaxEventBytes of a pending event, maxText bytes
// of text, and one fastjson parser sized by the largest event parsed. A
// StreamTee is not safe for concurrent use; it belongs to the goroutine
// copying the stream, which may read Result once done (also after an
// aborted stream: it holds what arrived). Reuse one through Reset, or
// through AcquireStreamTee and ReleaseStreamTee.
type StreamTee struct {
	ep    Endpoint
	drop  bool
	text  textAcc
	usage Usage
	fin   string
	stats StreamStats

	pending  []byte // the start of an event not yet complete, at most MaxEventBytes
	skipping bool   // the current event outgrew MaxEventBytes; forward it as it comes

	// Event framing across Write calls.
	atLineStart bool // no byte of the current line seen yet
	cr          bool // the last byte seen was '\r': a '\n' next continues that line ending
	lastCRLF    bool // the last line ending seen was "\r\n"
	held        bool // a blank line ended by '\r' closed the pending event; waiting for a '\n'

	parser    fastjson.Parser
	parsedMax int    // largest payload the parser has seen since Reset
	scratch   []byte // joins the lines of a multi-line data field
	unq       []byte // decodes a string with escapes
}

// NewStreamTee returns a StreamTee for a stream of ep. With dropUsageChunk
// (set it to what WithStreamUsage reported as injected), the chat or
// completions chunk whose "choices" is empty and whose "usage" is an object
// is not forwarded; it is ignored for other endpoints. maxText bounds the
// stored response text in bytes (0 stores none; the length is still
// counted).
func NewStreamTee(ep Endpoint, dropUsageChunk bool, maxText int) *StreamTee {
	t := new(StreamTee)
	t.Reset(ep, dropUsageChunk, maxText)
	return t
}

// Reset makes t ready for a new stream, as NewStreamTee would return it,
// keeping its buffers for reuse unless they grew beyond 64 KiB.
func (t *StreamTee) Reset(ep Endpoint, dropUsageChunk bool, maxText int) {
	t.ep, t.drop = ep, dropUsageChunk
	t.text.reset(maxText)
	t.usage, t.fin, t.stats = Usage{Source: UsageNone}, "", StreamStats{}
	t.pending, t.skipping = t.pending[:0], false
	t.atLineStart, t.cr, t.lastCRLF, t.held = true, false, false, false
	t.scratch, t.unq = t.scratch[:0], t.unq[:0]
	if cap(t.text.buf) > retainBytes {
		t.text.buf = nil
	}
	if cap(t.pending) > retainBytes {
		t.pending = nil
	}
	if cap(t.scratch) > retainBytes {
		t.scratch = nil
	}
	if cap(t.unq) > retainBytes {
		t.unq = nil
	}
	if t.parsedMax > retainBytes {
		t.parser = fastjson.Parser{}
	}
	t.parsedMax = 0
}

var teePool sync.Pool

// AcquireStreamTee returns a StreamTee from a pool, Reset for a stream of
// ep as with NewStreamTee. Hand it back with ReleaseStreamTee once its
// Result has been read.
func AcquireStreamTee(ep Endpoint, dropUsageChunk bool, maxText int) *StreamTee {
	t, _ := teePool.Get().(*StreamTee)
	if t == nil {
		t = new(StreamTee)
	}
	t.Reset(ep, dropUsageChunk, maxText)
	return t
}

// ReleaseStreamTee returns t to the pool used by AcquireStreamTee. t must
// not be used afterwards, and no goroutine may still be writing to it.
func ReleaseStreamTee(t *StreamTee) {
	t.Reset(0, false, 0) // drops oversized buffers before t idles in the pool
	teePool.Put(t)
}

// Result returns what t has learned so far: the text, the finish reason,
// and the usage (Source UsageUpstream if upstream reported it, else
// UsageNone). It copies the text, so it allocates once.
func (t *StreamTee) Result() Result {
	return Result{
		Text:         t.text.String(),
		Truncated:    t.text.truncated,
		TextBytes:    t.text.total,
		Usage:        t.usage,
		FinishReason: t.fin,
	}
}

// Stats returns the counts of the current stream.
func (t *StreamTee) Stats() StreamStats { return t.stats }

// Write takes the next bytes p of the upstream stream and calls forward with
// the bytes to send to the client: each call carries one or more complete
// events, consecutive in the stream, as soon as they are complete (the tee
// never delays a complete event to wait for more bytes, except to see
// whether a "\r" that ends a "\r\n"-terminated event is followed by "\n").
// forward's argument is valid only during the call: copy it to keep it.
// A nil forward discards.
//
// What it learns from each event's data payload ("[DONE]", comments and
// the event, id and retry fields are skipped):
//   - ChatCompletions: choices[0].delta.content, appended to the text;
//     Completions: choices[0].text; for both, choices[0].finish_reason and
//     the counts of any non-null "usage" (the last one wins);
//   - Responses: the "delta" of response.output_text.delta events, appended
//     to the text; the status and response.usage of response.completed,
//     response.incomplete and response.failed events.
//
// Write consumes all of p whatever forward returns; after forward's first
// error it forwards nothing more of p and returns that error once p has
// been learned from, so a proxy whose client left may keep feeding the
// stream (with a nil forward) to learn its usage.
func (t *StreamTee) Write(p []byte, forward func([]byte) error) error {
	w := sink{fn: forward}
	f := newEOLFinder(p)
	for i := 0; i < len(p); {
		switch {
		case t.skipping:
			end, ok := t.scanEnd(&f, i)
			w.send(p[i:end])
			i = end
			if ok {
				t.skipping = false
				t.stats.Events++
			}
		case len(t.pending) > 0:
			end, ok := t.scanEnd(&f, i)
			if !ok {
				t.hold(p[i:end], &w)
				i = end
				continue
			}
			if len(t.pending)+end-i > MaxEventBytes {
				w.send(t.pending)
				w.send(p[i:end])
				t.stats.Events++
				t.stats.Oversized++
			} else {
				t.pending = append(t.pending, p[i:end]...)
				if !t.inspect(t.pending, true) {
					w.send(t.pending)
				}
			}
			t.pending = t.pending[:0]
			i = end
		default:
			// Complete events are forwarded straight from p, consecutive
			// ones in one call.
			run := i
			for i < len(p) {
				end, ok := t.scanEnd(&f, i)
				if !ok {
					w.send(p[run:i])
					t.hold(p[i:end], &w)
					run, i = end, end
					break
				}
				if t.inspect(p[i:end], true) {
					w.send(p[run:i])
					run = end
				}
				i = end
			}
			w.send(p[run:i])
		}
	}
	return w.err
}

// Flush forwards what remains of the stream after its last Write: an event
// that arrived without its terminating blank line is learned from and
// forwarded as is (never dropped). It leaves t ready to frame a new stream
// but keeps what it learned.
func (t *StreamTee) Flush(forward func([]byte) error) error {
	w := sink{fn: forward}
	if !t.skipping && len(t.pending) > 0 {
		// A held event is complete: its blank line ended with '\r' and the
		// stream ended before we could see whether '\n' followed.
		if !t.inspect(t.pending, t.held) {
			w.send(t.pending)
		}
	}
	t.pending, t.skipping = t.pending[:0], false
	t.atLineStart, t.cr, t.lastCRLF, t.held = true, false, false, false
	return w.err
}

// hold keeps b, the start of an incomplete event, in t.pending, or, if the
// event would outgrow MaxEventBytes, forwards what there is and switches to
// forwarding the rest of the event as it arrives.
func (t *StreamTee) hold(b []byte, w *sink) {
	if len(t.pending)+len(b) <= MaxEventBytes {
		t.pending = append(t.pending, b...)
		return
	}
	w.send(t.pending)
	w.send(b)
	t.pending = t.pending[:0]
	t.skipping = true
	t.stats.Oversized++
}

// sink calls a forward function until it fails.
type sink struct {
	fn  func([]byte) error
	err error
}

func (s *sink) send(b []byte) {
	if len(b) == 0 || s.err != nil || s.fn == nil {
		return
	}
	s.err = s.fn(b)
}

// eolFinder finds line endings in p in amortized linear time: it remembers
// the next '\n' and '\r' it found, so a lone '\r' far ahead is searched for
// once, not once per line.
type eolFinder struct {
	p      []byte
	lf, cr int // next index of '\n' and '\r' at or after the last query; -1 none; -2 not searched
}

func newEOLFinder(p []byte) eolFinder { return eolFinder{p: p, lf: -2, cr: -2} }

// next returns the index of the first '\n' or '\r' at or after i, or -1.
// Successive calls must not decrease i.
func (f *eolFinder) next(i int) int {
	if f.lf != -1 && f.lf < i {
		f.lf = indexFrom(f.p, i, '\n')
	}
	if f.cr != -1 && f.cr < i {
		f.cr = indexFrom(f.p, i, '\r')
	}
	switch {
	case f.lf < 0:
		return f.cr
	case f.cr < 0:
		return f.lf
	default:
		return min(f.lf, f.cr)
	}
}

func indexFrom(p []byte, i int, c byte) int {
	if j := bytes.IndexByte(p[i:], c); j >= 0 {
		return i + j
	}
	return -1
}

// scanEnd consumes f.p from i up to the end of the current event. It returns
// the index just past the event's blank line and true, or len(f.p) and false
// if the event does not end within f.p. Its state carries over to the next
// call, on the next chunk, so that a line ending split across chunks is read
// as one.
func (t *StreamTee) scanEnd(f *eolFinder, i int) (int, bool) {
	p := f.p
	if t.cr {
		t.cr = false
		t.lastCRLF = p[i] == '\n'
		if t.lastCRLF {
			i++
		}
		if t.held {
			t.held = false
			return i, true
		}
	}
	for i < len(p) {
		j := f.next(i)
		if j < 0 {
			t.atLineStart = false
			return len(p), false
		}
		blank := t.atLineStart && j == i
		t.atLineStart = true
		if p[j] == '\n' {
			t.lastCRLF = false
			i = j + 1
			if blank {
				return i, true
			}
			continue
		}
		if j+1 == len(p) {
			// A '\r' ends the chunk: the next chunk's first byte says whether
			// it is "\r\n". A blank line in a "\r\n" stream is held until then.
			t.cr = true
			if blank && t.lastCRLF {
				t.held = true
				return len(p), false
			}
			return len(p), blank
		}
		i = j + 1
		t.lastCRLF = p[i] == '\n'
		if t.lastCRLF {
			i++
		}
		if blank {
			return i, true
		}
	}
	return len(p), false
}

// inspect learns from the complete event ev and reports whether to drop it
// (only when mayDrop).
func (t *StreamTee) inspect(ev []byte, mayDrop bool) (drop bool) {
	t.stats.Events++
	if len(ev) > MaxEventBytes {
		t.stats.Oversized++
		return false
	}
	event, data, ok := t.fields(ev)
	if !ok || string(data) == "[DONE]" {
		return false
	}
	switch t.ep {
	case ChatCompletions, Completions:
		if t.learnChoices(data) && mayDrop && t.drop {
			t.stats.Dropped++
			return true
		}
	case Responses:
		t.learnResponses(event, data)
	}
	return false
}

// fields returns the event name and the data of the event ev, joining
// multiple data lines with "\n" as the SSE specification does; ok is false
// without a data field.
func (t *StreamTee) fields(ev []byte) (event, data []byte, ok bool) {
	f := newEOLFinder(ev)
	n := 0
	for i := 0; i < len(ev); {
		end, next := len(ev), len(ev)
		if j := f.next(i); j >= 0 {
			end, next = j, j+1
			if ev[j] == '\r' && next < len(ev) && ev[next] == '\n' {
				next++
			}
		}
		line := ev[i:end]
		i = next
		if len(line) == 0 || line[0] == ':' {
			continue
		}
		name, value := line, []byte(nil)
		if c := bytes.IndexByte(line, ':'); c >= 0 {
			name, value = line[:c], line[c+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(name) {
		case "data":
			switch n {
			case 0:
				data = value
			case 1:
				t.scratch = append(append(append(t.scratch[:0], data...), '\n'), value...)
				data = t.scratch
			default:
				t.scratch = append(append(t.scratch, '\n'), value...)
				data = t.scratch
			}
			n++
		case "event":
			event = value
		}
	}
	return event, data, n > 0
}

// parse parses a data payload that should be a JSON object with fastjson,
// or returns nil. Only the rare Responses API terminal events take this
// path; chunks are read with the scanner.
func (t *StreamTee) parse(data []byte) *fastjson.Value {
	t.parsedMax = max(t.parsedMax, len(data))
	v, err := t.parser.ParseBytes(data)
	if err != nil || v.Type() != fastjson.TypeObject {
		t.stats.Malformed++
		return nil
	}
	return v
}

// members finds the first occurrence of each of up to three top-level
// members of the JSON object data, checking the object's structure (and
// that nothing but whitespace follows it) without building a tree. ok is
// false, and the payload counted as malformed, if data is not an object.
func (t *StreamTee) members(data []byte, names *[3]string, vals *[3][]byte) (ok bool) {
	open := skipWS(data, 0)
	if open == len(data) || data[open] != '{' {
		t.stats.Malformed++
		return false
	}
	it := newObjIter(data, open, 1)
	for {
		k, v, more := it.next()
		if !more {
			break
		}
		name := keyName(k)
		for i := range names {
			if vals[i] == nil && names[i] != "" && string(name) == names[i] {
				vals[i] = v
			}
		}
	}
	if it.err != nil || skipWS(data, it.i) != len(data) {
		t.stats.Malformed++
		return false
	}
	return true
}

// addString appends the JSON string raw (with its quotes) to the text,
// decoding escapes; it ignores anything that is not a string.
func (t *StreamTee) addString(raw []byte) {
	if len(raw) < 2 || raw[0] != '"' {
		return
	}
	raw = raw[1 : len(raw)-1]
	if bytes.IndexByte(raw, '\\') >= 0 {
		t.unq, _ = appendUnquoted(t.unq[:0], raw)
		raw = t.unq
	}
	t.text.add(raw)
}

// learnChoices learns from a chat or completions chunk and reports whether
// it is a usage-only chunk: "choices" an empty array, "usage" an object. It
// reads the chunk in one pass with the scanner, descending only into
// "choices" and the element whose index is 0 (the first of each member
// counts, as with fastjson's Get): no tree, no allocation.
func (t *StreamTee) learnChoices(data []byte) (usageOnly bool) {
	open := skipWS(data, 0)
	if open == len(data) || data[open] != '{' {
		t.stats.Malformed++
		return false
	}
	var (
		usage, content, finish []byte
		sawChoices, sawUsage   bool
		found                  bool
		nChoices               = -1 // not an array
	)
	it := newObjIter(data, open, 1)
	for {
		k, ok := it.key()
		if !ok {
			break
		}
		switch string(it.name(k)) {
		case "choices":
			if sawChoices {
				break
			}
			sawChoices = true
			arr, ok := it.array()
			if !ok {
				break
			}
			nChoices = 0
			for arr.elem() {
				nChoices++
				if c, ok := arr.object(); ok && !found {
					content, finish, found = t.choiceZero(&c)
					arr.resume(c.i, c.err)
				} else {
					arr.value()
				}
			}
			it.resume(arr.i, arr.err)
			continue
		case "usage":
			if !sawUsage {
				sawUsage = true
				usage, _ = it.value()
				continue
			}
		}
		it.value()
	}
	if it.err != nil || skipWS(data, it.i) != len(data) {
		t.stats.Malformed++
		return false
	}
	usageObj := len(usage) > 0 && usage[0] == '{'
	if usageObj {
		if u, ok := scanUsage(usage, "prompt_tokens", "completion_tokens"); ok {
			t.usage = u
		}
	}
	if found {
		t.addString(content)
		if len(finish) > 2 && finish[0] == '"' {
			name, _ := unquote(finish[1 : len(finish)-1])
			t.fin = finishReason(name)
		}
	}
	return nChoices == 0 && usageObj
}

// choiceZero reads one element of "choices" to its end: if its "index" is
// absent or a number equal to 0, it returns the raw content (delta.content for chat, text for
// completions) and finish_reason, and true. The caller resumes after c and
// takes its error.
func (t *StreamTee) choiceZero(c *objIter) (content, finish []byte, ok bool) {
	index := []byte("0")
	var sawIndex, sawDelta, sawText, sawFinish bool
	for {
		k, more := c.key()
		if !more {
			break
		}
		switch string(c.name(k)) {
		case "index":
			if !sawIndex {
				sawIndex = true
				index, _ = c.value()
				continue
			}
		case "delta":
			if !sawDelta && t.ep == ChatCompletions {
				sawDelta = true
				if d, ok := c.object(); ok {
					var sawContent bool
					for {
						k, more := d.key()
						if !more {
							break
						}
						v, _ := d.value()
						if !sawContent && string(d.name(k)) == "content" {
							sawContent, content = true, v
						}
					}
					c.resume(d.i, d.err)
					continue
				}
			}
		case "text":
			if !sawText && t.ep == Completions {
				sawText = true
				content, _ = c.value()
				continue
			}
		case "finish_reason":
			if !sawFinish {
				sawFinish = true
				finish, _ = c.value()
				continue
			}
		}
		c.value()
	}
	return content, finish, isZeroNumber(index)
}

// Responses API event types the tee learns from.
const (
	evTextDelta  = "response.output_text.delta"
	evCompleted  = "response.completed"
	evIncomplete = "response.incomplete"
	evFailed     = "response.failed"
)

var responsesMembers = [3]string{"type", "delta"}

// learnResponses learns from a Responses API event. Events whose "event"
// field names a type it does not learn from are not read at all; the
// payload's "type" decides otherwise.
func (t *StreamTee) learnResponses(event, data []byte) {
	switch string(event) {
	case "", evTextDelta, evCompleted, evIncomplete, evFailed:
	default:
		return
	}
	var vals [3][]byte
	if !t.members(data, &responsesMembers, &vals) {
		return
	}
	typ := event
	if raw := vals[0]; len(raw) >= 2 && raw[0] == '"' {
		typ, _ = unquote(raw[1 : len(raw)-1])
	}
	switch string(typ) {
	case evTextDelta:
		t.addString(vals[1])
	case evCompleted, evIncomplete, evFailed:
		// Once per stream: a full parse is fine.
		v := t.parse(data)
		if v == nil {
			return
		}
		r := v.Get("response")
		if r == nil || r.Type() != fastjson.TypeObject {
			return
		}
		if u, ok := usageFrom(r.Get("usage"), "input_tokens", "output_tokens"); ok {
			t.usage = u
		}
		if st, ok := stringBytes(r.Get("status")); ok && len(st) > 0 {
			t.fin = finishReason(st)
		}
	}
}
