package mock

import "github.com/valyala/fasthttp"

// completions serves POST /v1/completions, the legacy text_completion API,
// streamed like chat but with "text" instead of deltas and no role chunk.
// An array prompt still gets a single choice.
func (s *Server) completions(rc *fasthttp.RequestCtx, k knobs) error {
	var req request
	if err := decodeBody(rc, &req); err != nil {
		return err
	}
	r := s.newReply(&req, k, req.completionPromptTokens())
	if req.Stream {
		s.startSSE(rc, r, writeCompletionStream)
		return nil
	}
	buf := s.getBuf()
	*buf = appendCompletion((*buf)[:0], &r)
	s.sendJSON(rc, buf)
	return nil
}

// appendCompletionHead appends the fields a text_completion body and its
// stream chunks start with, up to and including `"choices":[`.
func appendCompletionHead(dst []byte, r *reply) []byte {
	dst = append(dst, `{"id":"`...)
	dst = appendID(dst, "cmpl-mock-", r.seq)
	dst = append(dst, `","object":"text_completion","created":`...)
	dst = appendInt(dst, int(r.created))
	dst = append(dst, `,"model":`...)
	dst = appendJSONString(dst, r.model)
	return append(dst, `,"choices":[`...)
}

// appendCompletion appends a non-stream text_completion body.
func appendCompletion(dst []byte, r *reply) []byte {
	dst = appendCompletionHead(dst, r)
	dst = append(dst, `{"text":`...)
	dst = append(dst, r.text.quoted...)
	dst = append(dst, `,"index":0,"logprobs":null,"finish_reason":"stop"}],"usage":`...)
	dst = appendChatUsage(dst, r)
	return append(dst, '}')
}

// writeCompletionStream writes r.chunks text chunks (each after
// Options.ChunkDelay), a finish chunk, the usage chunk if include_usage was
// requested, and "data: [DONE]".
func writeCompletionStream(ev *events, r *reply) {
	for i := 0; i < r.chunks && ev.err == nil; i++ {
		ev.pause()
		b := appendCompletionHead(ev.data(), r)
		b = append(b, `{"text":`...)
		b = appendJSONString(b, r.text.chunk(i, r.chunks))
		b = append(b, `,"index":0,"logprobs":null,"finish_reason":null}`...)
		ev.send(appendChunkTail(b, r))
	}
	b := appendCompletionHead(ev.data(), r)
	b = append(b, `{"text":"","index":0,"logprobs":null,"finish_reason":"stop"}`...)
	ev.send(appendChunkTail(b, r))
	writeUsageAndDone(ev, r, appendCompletionHead)
}
