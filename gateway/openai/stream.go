package openai

import (
	"bytes"
	"sync"
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
	Malformed int // data payloads not read: not a JSON object, or broken where read (forwarded unchanged)
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
// Payloads are read in one pass by an allocation-free scanner that descends
// only into the members it needs; it checks the structure it walks (a
// payload truncated or broken there is not learned from) but, unlike a
// validator, not the inside of members it skips.
//
// Memory is bounded: at most MaxEventBytes of a pending event, as much of
// withheld events (SetSecrets), maxText bytes of text, and scratch buffers
// sized by the largest event read. A StreamTee is not safe for concurrent
// use; it belongs to the goroutine copying the stream, which may read
// Result once done (also after an aborted stream: it holds what arrived).
// Reuse one through Reset, or through AcquireStreamTee and
// ReleaseStreamTee.
type StreamTee struct {
	ep    Endpoint
	drop  bool
	text  textAcc
	usage Usage
	fin   string
	stats StreamStats
	ended bool           // the stream's terminal event has been seen (see Ended)
	anth  anthropicUsage // Messages: the usage seen so far

	pending  []byte // the start of an event not yet complete, at most MaxEventBytes
	skipping bool   // the current event outgrew MaxEventBytes; forward it as it comes

	// Event framing across Write calls.
	atLineStart bool // no byte of the current line seen yet
	cr          bool // the last byte seen was '\r': a '\n' next continues that line ending
	lastCRLF    bool // the last line ending seen was "\r\n"
	held        bool // a blank line ended by '\r' closed the pending event; waiting for a '\n'

	scratch []byte // joins the lines of a multi-line data field

	// With secrets (SetSecrets; see guard.go).
	guard    *Secrets
	states   []int    // per secret: how much of its start the text so far ends in
	whole    bool     // the text completed a secret
	blocked  bool     // a secret would have been forwarded: forward nothing more
	withheld []byte   // complete events kept back while the text ends in a secret's start
	mark     textMark // the text of the events forwarded
	rawTail  []byte   // the last bytes of oversized events forwarded, to find a secret across pieces
	decoded  []byte   // scratch for decoding text and joining pieces
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
	t.usage, t.fin, t.stats, t.ended, t.anth = Usage{Source: UsageNone}, "", StreamStats{}, false, anthropicUsage{}
	t.pending, t.skipping = t.pending[:0], false
	t.atLineStart, t.cr, t.lastCRLF, t.held = true, false, false, false
	t.scratch = t.scratch[:0]
	t.guard, t.states, t.whole, t.blocked, t.mark = nil, t.states[:0], false, false, textMark{}
	t.withheld, t.rawTail, t.decoded = t.withheld[:0], t.rawTail[:0], t.decoded[:0]
	for _, b := range []*[]byte{&t.pending, &t.scratch, &t.withheld, &t.rawTail, &t.decoded} {
		if cap(*b) > retainBytes {
			*b = nil
		}
	}
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

// Ended reports whether the stream's terminal event has passed through
// Write or Flush — "data: [DONE]" for chat and completions, a
// response.completed, response.incomplete or response.failed event for
// Responses — and no event is withheld (SetSecrets). Everything the stream
// reports (text, usage) comes before it, so the proxy can record the
// request before it forwards that event.
func (t *StreamTee) Ended() bool { return t.ended && len(t.withheld) == 0 }

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
//
// With secrets (SetSecrets), Write may withhold events, and once a secret
// would pass it forwards and learns nothing more and returns ErrSecret.
func (t *StreamTee) Write(p []byte, forward func([]byte) error) error {
	w := sink{fn: forward}
	f := newEOLFinder(p)
	for i := 0; i < len(p) && !t.blocked; {
		switch {
		case t.skipping:
			end, ok := t.scanEnd(&f, i)
			t.sendRaw(p[i:end], &w)
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
				t.sendRaw(t.pending, &w)
				t.sendRaw(p[i:end], &w)
				t.stats.Events++
				t.stats.Oversized++
			} else {
				t.pending = append(t.pending, p[i:end]...)
				t.settle(t.pending, t.inspect(t.pending, true), &w)
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
				if v := t.inspect(p[i:end], true); v != pass || len(t.withheld) > 0 {
					w.send(p[run:i])
					t.settle(p[i:end], v, &w)
					run = end
				}
				i = end
				if t.blocked {
					return ErrSecret
				}
			}
			w.send(p[run:i])
		}
	}
	if t.blocked {
		return ErrSecret
	}
	return w.err
}

// Flush forwards what remains of the stream after its last Write: an event
// that arrived without its terminating blank line is learned from and
// forwarded as is (never dropped). It leaves t ready to frame a new stream
// but keeps what it learned. With secrets, events still withheld are not
// forwarded (the stream ended inside a secret's start): it returns
// ErrSecret, as it does once Write has.
func (t *StreamTee) Flush(forward func([]byte) error) error {
	w := sink{fn: forward}
	if !t.blocked && !t.skipping && len(t.pending) > 0 {
		// A held event is complete: its blank line ended with '\r' and the
		// stream ended before we could see whether '\n' followed.
		t.settle(t.pending, t.inspect(t.pending, t.held), &w)
	}
	if len(t.withheld) > 0 {
		t.block()
	}
	t.pending, t.skipping = t.pending[:0], false
	t.atLineStart, t.cr, t.lastCRLF, t.held = true, false, false, false
	if t.blocked {
		return ErrSecret
	}
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
	t.sendRaw(t.pending, w)
	t.sendRaw(b, w)
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

// inspect learns from the complete event ev and says what to do with it:
// drop it (only when mayDrop) or, with secrets, withhold it or block.
func (t *StreamTee) inspect(ev []byte, mayDrop bool) verdict {
	t.stats.Events++
	if t.guard == nil {
		return t.learn(ev, mayDrop)
	}
	if t.guard.Contains(ev) {
		return block
	}
	return t.judge(t.learn(ev, mayDrop))
}

// learn learns from the complete event ev and reports whether to drop it
// (only when mayDrop).
func (t *StreamTee) learn(ev []byte, mayDrop bool) verdict {
	if len(ev) > MaxEventBytes {
		t.stats.Oversized++
		return pass
	}
	event, data, ok := t.fields(ev)
	if !ok {
		return pass
	}
	if string(data) == "[DONE]" {
		t.ended = t.ended || t.ep != Responses && t.ep != Messages
		return pass
	}
	switch t.ep {
	case ChatCompletions, Completions:
		if t.learnChoices(data) && mayDrop && t.drop {
			t.stats.Dropped++
			return drop
		}
	case Responses:
		t.learnResponses(event, data)
	case Messages:
		t.learnMessages(event, data)
	}
	return pass
}

// addText appends the JSON string raw to the response text.
func (t *StreamTee) addText(raw []byte) {
	t.text.addJSON(raw)
	if t.guard != nil {
		t.guardedText(raw)
	}
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

// learnChoices learns from a chat or completions chunk and reports whether
// it is a usage-only chunk: "choices" an empty array, "usage" an object.
func (t *StreamTee) learnChoices(data []byte) (usageOnly bool) {
	open := skipWS(data, 0)
	if open == len(data) || data[open] != '{' {
		t.stats.Malformed++
		return false
	}
	inner := "delta"
	if t.ep == Completions {
		inner = ""
	}
	s, ok := scanChoices(data, open, inner)
	if !ok {
		t.stats.Malformed++
		return false
	}
	if s.usageOK {
		t.usage = s.usage
	}
	if s.found {
		t.addText(s.content)
		if fr, ok := unquoted(s.finish); ok && len(fr) > 0 {
			t.fin = finishReason(fr)
		}
	}
	return s.n == 0 && s.usageObj
}

// Responses API event types the tee learns from.
const (
	evTextDelta  = "response.output_text.delta"
	evCompleted  = "response.completed"
	evIncomplete = "response.incomplete"
	evFailed     = "response.failed"
)

// learnResponses learns from a Responses API event: the "delta" of a text
// delta, the status and usage of the "response" of a terminal event. Events
// whose "event" field names another type are not read at all; otherwise the
// payload's "type" decides (the event field if it has none).
func (t *StreamTee) learnResponses(event, data []byte) {
	switch string(event) {
	case "", evTextDelta, evCompleted, evIncomplete, evFailed:
	default:
		return
	}
	open := skipWS(data, 0)
	if open == len(data) || data[open] != '{' {
		t.stats.Malformed++
		return
	}
	var (
		typ, delta         []byte
		sawType, sawDelta  bool
		sawResp, respFound bool
		resp               = Result{Usage: t.usage, FinishReason: t.fin}
	)
	it := newObjIter(data, open, 1)
	for {
		k, more := it.key()
		if !more {
			break
		}
		switch string(it.name(k)) {
		case "type":
			if !sawType {
				sawType = true
				typ, _ = it.value()
				continue
			}
		case "delta":
			if !sawDelta {
				sawDelta = true
				delta, _ = it.value()
				continue
			}
		case "response":
			if sawResp {
				break
			}
			sawResp = true
			if r, ok := it.object(); ok {
				scanResponse(&r, &resp, nil)
				it.resume(r.i, r.err)
				respFound = true
				continue
			}
		}
		it.value()
	}
	if it.err != nil || skipWS(data, it.i) != len(data) {
		t.stats.Malformed++
		return
	}
	name, ok := unquoted(typ)
	if !ok {
		name = event
	}
	switch string(name) {
	case evTextDelta:
		t.addText(delta)
	case evCompleted, evIncomplete, evFailed:
		t.ended = true
		if respFound {
			t.usage, t.fin = resp.Usage, resp.FinishReason
		}
	}
}
