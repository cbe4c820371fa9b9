// Package mock is the OpenAI-compatible fake upstream that cmd/mockllm
// serves; gateway tests and benchmarks embed it directly.
package mock

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Request headers that steer one request. They apply on every known route,
// /v1/models and the echo endpoint included, and each overrides the matching
// Options field for that request only.
const (
	// hdrStatus, an integer 400–599, makes the request fail with that
	// status and an OpenAI-shaped error body (plus "Retry-After: 1" for 429).
	hdrStatus = "x-mock-status"
	// hdrLatency, a Go duration such as "250ms", replaces Options.Latency.
	hdrLatency = "x-mock-latency"
	// hdrChunks, an integer 1–maxChunks, replaces Options.Chunks.
	hdrChunks = "x-mock-chunks"
	// hdrCachedTokens, an integer >= 0, reports that many of the prompt
	// tokens (at most all of them) as read from the provider's prompt
	// cache: usage.prompt_tokens_details.cached_tokens (chat and legacy
	// completions), usage.input_tokens_details.cached_tokens (Responses
	// API). Without it chat and completions send no details, and the
	// Responses API 0.
	hdrCachedTokens = "x-mock-cached-tokens"
	// hdrRequestID is echoed back as hdrMockRequestID on every response.
	hdrRequestID     = "x-request-id"
	hdrMockRequestID = "x-mock-request-id"
)

// Server is a deterministic, OpenAI-compatible fake LLM upstream. Its
// Handler is safe for concurrent use. Responses depend only on the request,
// the Options and a per-server sequence number used in ids; the exceptions
// are the "created" timestamps and the random failures of Options.FailRate.
type Server struct {
	opts   Options
	base   completionText // text for streams of at most baseWords chunks
	text   completionText // text for opts.Chunks chunks
	models []byte         // precomputed /v1/models body
	seq    atomic.Uint64
	bufs   sync.Pool // of *[]byte

	done      chan struct{} // closed by Close
	closeOnce sync.Once
}

// NewServer returns a Server for opts. Zero fields get their documented
// defaults and out-of-range fields are clamped; use Options.Validate to
// reject them instead.
func NewServer(opts Options) *Server {
	opts = opts.withDefaults()
	s := &Server{
		opts:   opts,
		base:   newCompletionText(baseWords),
		models: modelsBody(),
		done:   make(chan struct{}),
	}
	s.text = s.base
	if opts.Chunks > baseWords {
		s.text = newCompletionText(opts.Chunks)
	}
	return s
}

// Close ends in-flight streams and latency waits early, so that a
// fasthttp.Server shutdown does not wait for them. Requests arriving later
// still work but no longer sleep. Close is idempotent and safe for
// concurrent use.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.done) })
}

// Handler serves one request. Every response carries x-mock-request-id
// echoing the request's x-request-id, if any.
func (s *Server) Handler(rc *fasthttp.RequestCtx) {
	if id := rc.Request.Header.Peek(hdrRequestID); len(id) > 0 {
		rc.Response.Header.SetBytesV(hdrMockRequestID, id)
	}
	if err := s.route(rc); err != nil {
		writeError(rc, err)
	}
}

// endpoint serves one route once the knobs are applied.
type endpoint func(s *Server, rc *fasthttp.RequestCtx, k knobs) error

// route dispatches on path and method.
func (s *Server) route(rc *fasthttp.RequestCtx) error {
	switch string(rc.Path()) {
	case "/v1/chat/completions":
		return s.serve(rc, "POST", true, (*Server).chat)
	case "/v1/completions":
		return s.serve(rc, "POST", true, (*Server).completions)
	case "/v1/embeddings":
		return s.serve(rc, "POST", true, (*Server).embeddings)
	case "/v1/responses":
		return s.serve(rc, "POST", true, (*Server).responses)
	case "/v1/messages":
		return s.serve(rc, "POST", true, (*Server).messages)
	case "/v1/models":
		return s.serve(rc, "GET", false, (*Server).listModels)
	case "/v1/_echo/headers":
		return s.serve(rc, "GET, POST", false, (*Server).echoHeaders)
	}
	return newAPIError(fasthttp.StatusNotFound,
		fmt.Sprintf("Invalid URL (%s %s)", rc.Method(), rc.Path()), nil)
}

// serve checks the method against allow ("GET", "POST" or "GET, POST"),
// reads the knobs, sleeps the latency, injects failures and calls h.
// Options.Latency and Options.FailRate apply only when inference is true.
func (s *Server) serve(rc *fasthttp.RequestCtx, allow string, inference bool, h endpoint) error {
	if !methodAllowed(rc, allow) {
		rc.Response.Header.Set("Allow", allow)
		return newAPIError(fasthttp.StatusMethodNotAllowed,
			fmt.Sprintf("Invalid method %s for %s; allowed: %s", rc.Method(), rc.Path(), allow), nil)
	}
	k, err := s.readKnobs(rc, inference)
	if err != nil {
		return err
	}
	if !s.wait(k.latency) {
		return newAPIError(fasthttp.StatusServiceUnavailable, "mockllm is shutting down", errClosed)
	}
	if k.status != 0 {
		return newAPIError(k.status, fmt.Sprintf("mockllm: injected status %d (%s header)", k.status, hdrStatus), nil)
	}
	if inference && s.opts.FailRate > 0 && rand.Float64() < s.opts.FailRate {
		return newAPIError(fasthttp.StatusInternalServerError, "mockllm: injected failure (-fail-rate)", nil)
	}
	return h(s, rc, k)
}

// methodAllowed reports whether the request method is in allow.
func methodAllowed(rc *fasthttp.RequestCtx, allow string) bool {
	switch {
	case rc.IsPost():
		return allow != "GET"
	case rc.IsGet():
		return allow != "POST"
	}
	return false
}

// knobs is the behaviour of one request: the Options with the x-mock-*
// headers applied.
type knobs struct {
	latency time.Duration
	status  int // 0: no injected status
	chunks  int
	cached  int // -1: no hdrCachedTokens
}

// readKnobs applies the x-mock-* headers to the Options. Malformed header
// values are a 400, so a typo in a test fails loudly.
func (s *Server) readKnobs(rc *fasthttp.RequestCtx, inference bool) (knobs, error) {
	k := knobs{chunks: s.opts.Chunks, cached: -1}
	if inference {
		k.latency = s.opts.Latency
	}
	h := &rc.Request.Header
	if v := h.Peek(hdrLatency); len(v) > 0 {
		d, err := time.ParseDuration(string(v))
		if err != nil || d < 0 || d > maxLatency {
			return k, badHeader(hdrLatency, v, fmt.Sprintf("a duration between 0 and %v", maxLatency), err)
		}
		k.latency = d
	}
	if v := h.Peek(hdrStatus); len(v) > 0 {
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 400 || n > 599 {
			return k, badHeader(hdrStatus, v, "an integer between 400 and 599", err)
		}
		k.status = n
	}
	if v := h.Peek(hdrChunks); len(v) > 0 {
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 1 || n > maxChunks {
			return k, badHeader(hdrChunks, v, fmt.Sprintf("an integer between 1 and %d", maxChunks), err)
		}
		k.chunks = n
	}
	if v := h.Peek(hdrCachedTokens); len(v) > 0 {
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 0 || n > 1<<30 {
			return k, badHeader(hdrCachedTokens, v, "an integer between 0 and 2^30", err)
		}
		k.cached = n
	}
	return k, nil
}

// badHeader returns the 400 for a malformed x-mock-* header.
func badHeader(name string, v []byte, want string, err error) error {
	if err != nil {
		err = fmt.Errorf("parsing %s: %w", name, err)
	}
	ae := newAPIError(fasthttp.StatusBadRequest, fmt.Sprintf("invalid %s header %q: want %s", name, v, want), err)
	ae.Code = "invalid_mock_header"
	return ae
}

// wait sleeps d, and reports false if the Server was closed first.
func (s *Server) wait(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.done:
		return false
	}
}

// textFor returns the completion text for a stream of chunks chunks,
// precomputed unless chunks is an uncommon override above baseWords.
func (s *Server) textFor(chunks int) completionText {
	switch {
	case chunks <= baseWords:
		return s.base
	case chunks == s.opts.Chunks:
		return s.text
	}
	return newCompletionText(chunks)
}

// newReply reads the parts of a reply common to all endpoints.
func (s *Server) newReply(req *request, k knobs, prompt int) reply {
	return reply{
		seq:          s.seq.Add(1),
		created:      time.Now().Unix(),
		model:        req.model(),
		text:         s.textFor(k.chunks),
		chunks:       k.chunks,
		prompt:       prompt,
		cachedIn:     min(k.cached, prompt),
		includeUsage: req.StreamOptions.IncludeUsage,
	}
}

// decodeBody decodes the JSON request body into v, or returns the 400.
func decodeBody(rc *fasthttp.RequestCtx, v any) error {
	if err := json.Unmarshal(rc.PostBody(), v); err != nil {
		ae := newAPIError(fasthttp.StatusBadRequest,
			"We could not parse the JSON body of your request: "+err.Error(),
			fmt.Errorf("decoding request body: %w", err))
		ae.Code = "invalid_json"
		return ae
	}
	return nil
}

// sendJSON sends *buf, a scratch buffer from getBuf holding a JSON body, as
// a 200 application/json response, and returns buf to the pool.
func (s *Server) sendJSON(rc *fasthttp.RequestCtx, buf *[]byte) {
	rc.SetContentType("application/json")
	rc.SetBody(*buf)
	s.putBuf(buf)
}

// getBuf returns a scratch buffer from the pool.
func (s *Server) getBuf() *[]byte {
	if b, ok := s.bufs.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 0, 2048)
	return &b
}

// putBuf returns buf to the pool unless it grew too large to keep.
func (s *Server) putBuf(buf *[]byte) {
	if cap(*buf) > 64<<10 {
		return
	}
	*buf = (*buf)[:0]
	s.bufs.Put(buf)
}
