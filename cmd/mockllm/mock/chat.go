package mock

import "github.com/valyala/fasthttp"

// chat serves POST /v1/chat/completions: a chat.completion, or with
// "stream": true a stream of chat.completion.chunk events.
func (s *Server) chat(rc *fasthttp.RequestCtx, k knobs) error {
	var req request
	if err := decodeBody(rc, &req); err != nil {
		return err
	}
	r := s.newReply(&req, k, req.chatPromptTokens())
	if req.Stream {
		s.startSSE(rc, r, writeChatStream)
		return nil
	}
	buf := s.getBuf()
	*buf = appendChatCompletion((*buf)[:0], &r)
	s.sendJSON(rc, buf)
	return nil
}

// appendChatCompletion appends a non-stream chat.completion body.
func appendChatCompletion(dst []byte, r *reply) []byte {
	dst = append(dst, `{"id":"`...)
	dst = appendID(dst, "chatcmpl-mock-", r.seq)
	dst = append(dst, `","object":"chat.completion","created":`...)
	dst = appendInt(dst, int(r.created))
	dst = append(dst, `,"model":`...)
	dst = appendJSONString(dst, r.model)
	dst = append(dst, `,"choices":[{"index":0,"message":{"role":"assistant","content":`...)
	dst = append(dst, r.text.quoted...)
	dst = append(dst, `,"refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":`...)
	dst = appendChatUsage(dst, r)
	return append(dst, '}')
}

// appendChatUsage appends the usage object of the chat and legacy
// completion APIs.
func appendChatUsage(dst []byte, r *reply) []byte {
	c := r.completionTokens()
	dst = append(dst, `{"prompt_tokens":`...)
	dst = appendInt(dst, r.prompt)
	dst = append(dst, `,"completion_tokens":`...)
	dst = appendInt(dst, c)
	dst = append(dst, `,"total_tokens":`...)
	dst = appendInt(dst, r.prompt+c)
	if r.cachedIn >= 0 {
		dst = append(dst, `,"prompt_tokens_details":{"cached_tokens":`...)
		dst = appendInt(dst, r.cachedIn)
		dst = append(dst, `,"audio_tokens":0}`...)
	}
	return append(dst, '}')
}

// appendChatChunkHead appends the fields every chat.completion.chunk
// starts with, up to and including `"choices":[`.
func appendChatChunkHead(dst []byte, r *reply) []byte {
	dst = append(dst, `{"id":"`...)
	dst = appendID(dst, "chatcmpl-mock-", r.seq)
	dst = append(dst, `","object":"chat.completion.chunk","created":`...)
	dst = appendInt(dst, int(r.created))
	dst = append(dst, `,"model":`...)
	dst = appendJSONString(dst, r.model)
	return append(dst, `,"choices":[`...)
}

// appendChunkTail closes a chunk's choices array and object. With
// include_usage every chunk but the last carries "usage":null, as OpenAI
// sends it.
func appendChunkTail(dst []byte, r *reply) []byte {
	if r.includeUsage {
		return append(dst, `],"usage":null}`...)
	}
	return append(dst, "]}"...)
}

// writeChatStream writes the chat event stream: a role chunk, r.chunks
// content chunks (each after Options.ChunkDelay), a finish chunk, the usage
// chunk if include_usage was requested, and "data: [DONE]".
func writeChatStream(ev *events, r *reply) {
	b := appendChatChunkHead(ev.data(), r)
	b = append(b, `{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}`...)
	ev.send(appendChunkTail(b, r))
	for i := 0; i < r.chunks && ev.err == nil; i++ {
		ev.pause()
		b = appendChatChunkHead(ev.data(), r)
		b = append(b, `{"index":0,"delta":{"content":`...)
		b = appendJSONString(b, r.text.chunk(i, r.chunks))
		b = append(b, `},"logprobs":null,"finish_reason":null}`...)
		ev.send(appendChunkTail(b, r))
	}
	b = appendChatChunkHead(ev.data(), r)
	b = append(b, `{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}`...)
	ev.send(appendChunkTail(b, r))
	writeUsageAndDone(ev, r, appendChatChunkHead)
}

// writeUsageAndDone ends a chat or legacy completion stream: the usage
// chunk (empty choices) if include_usage was requested, then [DONE].
func writeUsageAndDone(ev *events, r *reply, head func([]byte, *reply) []byte) {
	if r.includeUsage {
		b := head(ev.data(), r)
		b = append(b, `],"usage":`...)
		b = appendChatUsage(b, r)
		ev.send(append(b, '}'))
	}
	ev.send(append(ev.data(), "[DONE]"...))
}
