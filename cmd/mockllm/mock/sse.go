package mock

import (
	"bufio"
	"errors"
	"time"

	"github.com/valyala/fasthttp"
)

// errClosed reports that the Server was closed while a stream was waiting.
var errClosed = errors.New("mockllm: server closed")

// reply is everything a response body needs, copied out of the request so
// that a stream writer, which runs after the handler returns, keeps no
// reference to the RequestCtx.
type reply struct {
	seq          uint64 // per-server sequence number, used in ids
	created      int64  // unix seconds
	model        string // echoed model; owned by reply
	text         completionText
	chunks       int    // content chunks in a stream; 1 <= chunks <= text.words()
	prompt       int    // prompt (input) tokens
	cached       int    // Messages: prompt tokens read from the cache, beyond prompt
	cachedIn     int    // OpenAI APIs: of prompt, read from the cache (hdrCachedTokens); -1: not reported
	tool         string // Messages: the tool the answer calls ("": a text answer)
	includeUsage bool
}

// completionTokens returns the completion (output) token count.
func (r *reply) completionTokens() int { return r.text.words() }

// startSSE sets the event-stream headers on rc and starts write as its body
// stream writer. write runs after the handler returns, in a goroutine owned
// by fasthttp; it must not touch rc.
func (s *Server) startSSE(rc *fasthttp.RequestCtx, r reply, write func(*events, *reply)) {
	rc.SetContentType("text/event-stream")
	rc.Response.Header.Set("Cache-Control", "no-cache")
	rc.SetBodyStreamWriter(func(w *bufio.Writer) {
		ev := s.newEvents(w)
		defer ev.release()
		write(ev, &r)
	})
}

// events writes server-sent events to one stream. After the first write
// error, or once pause sees the Server closed, err is set and every method
// is a no-op, so writers may check err once per loop. It is not safe for
// concurrent use.
type events struct {
	s     *Server
	w     *bufio.Writer
	buf   *[]byte
	timer *time.Timer // nil until the first pause
	err   error
}

// newEvents returns an events writing to w with a pooled buffer; call
// release when done.
func (s *Server) newEvents(w *bufio.Writer) *events {
	return &events{s: s, w: w, buf: s.getBuf()}
}

// release returns the buffer to the pool and stops the timer.
func (e *events) release() {
	if e.timer != nil {
		e.timer.Stop()
	}
	e.s.putBuf(e.buf)
	e.buf = nil
}

// data starts an unnamed event and returns the buffer to append its JSON
// payload to; pass the result to send.
func (e *events) data() []byte {
	return append((*e.buf)[:0], "data: "...)
}

// event starts an event named name, as the Responses API sends them.
func (e *events) event(name string) []byte {
	b := append((*e.buf)[:0], "event: "...)
	b = append(b, name...)
	return append(b, "\ndata: "...)
}

// send terminates the event in b, writes it and flushes it to the client.
func (e *events) send(b []byte) {
	b = append(b, "\n\n"...)
	*e.buf = b
	if e.err != nil {
		return
	}
	if _, err := e.w.Write(b); err != nil {
		e.err = err
		return
	}
	e.err = e.w.Flush()
}

// pause sleeps Options.ChunkDelay, or ends the stream if the Server is
// closed meanwhile.
func (e *events) pause() {
	d := e.s.opts.ChunkDelay
	if d <= 0 || e.err != nil {
		return
	}
	if e.timer == nil {
		e.timer = time.NewTimer(d)
	} else {
		e.timer.Reset(d)
	}
	select {
	case <-e.timer.C:
	case <-e.s.done:
		e.err = errClosed
	}
}
