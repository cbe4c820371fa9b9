package mock

import (
	"github.com/valyala/fasthttp"
)

// messages serves Anthropic's Messages API (POST /v1/messages): the same
// deterministic text and token counts as chat, in Anthropic's shapes. The
// system prompt's tokens are reported as read from the prompt cache
// (cache_read_input_tokens), the rest as input_tokens, so that clients can
// check that cache tokens are counted.
func (s *Server) messages(rc *fasthttp.RequestCtx, k knobs) error {
	var req request
	if err := decodeBody(rc, &req); err != nil {
		return err
	}
	if req.MaxTokens == nil {
		return newAPIError(fasthttp.StatusBadRequest, "max_tokens: Field required", nil)
	}
	r := s.newReply(&req, k, req.chatPromptTokens())
	r.cached = tokensFor(req.System.chars)
	if req.Stream {
		s.startSSE(rc, r, writeMessagesStream)
		return nil
	}
	buf := s.getBuf()
	b := appendMessageStart((*buf)[:0], &r, true)
	*buf = b
	s.sendJSON(rc, buf)
	return nil
}

// appendMessageStart appends the message object: complete (content, stop
// reason, usage) or as message_start carries it (no content yet).
func appendMessageStart(dst []byte, r *reply, complete bool) []byte {
	dst = append(dst, `{"id":"`...)
	dst = appendID(dst, "msg_mock", r.seq)
	dst = append(dst, `","type":"message","role":"assistant","model":`...)
	dst = appendJSONString(dst, r.model)
	dst = append(dst, `,"content":[`...)
	if complete {
		dst = append(dst, `{"type":"text","text":`...)
		dst = append(dst, r.text.quoted...)
		dst = append(dst, '}')
	}
	dst = append(dst, `],"stop_reason":`...)
	if complete {
		dst = append(dst, `"end_turn"`...)
	} else {
		dst = append(dst, `null`...)
	}
	dst = append(dst, `,"stop_sequence":null,"usage":{"input_tokens":`...)
	dst = appendInt(dst, r.prompt)
	dst = append(dst, `,"cache_creation_input_tokens":0,"cache_read_input_tokens":`...)
	dst = appendInt(dst, r.cached)
	dst = append(dst, `,"output_tokens":`...)
	if complete {
		dst = appendInt(dst, r.completionTokens())
	} else {
		dst = appendInt(dst, 1)
	}
	return append(dst, "}}"...)
}

// writeMessagesStream writes Anthropic's event sequence: message_start,
// content_block_start, content_block_delta per chunk, content_block_stop,
// message_delta (stop reason, output tokens), message_stop.
func writeMessagesStream(ev *events, r *reply) {
	b := append(ev.event("message_start"), `{"type":"message_start","message":`...)
	b = appendMessageStart(b, r, false)
	ev.send(append(b, '}'))
	ev.send(append(ev.event("content_block_start"), `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`...))
	for i := 0; i < r.chunks && ev.err == nil; i++ {
		ev.pause()
		b = append(ev.event("content_block_delta"), `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":`...)
		b = appendJSONString(b, r.text.chunk(i, r.chunks))
		ev.send(append(b, "}}"...))
	}
	ev.send(append(ev.event("content_block_stop"), `{"type":"content_block_stop","index":0}`...))
	b = append(ev.event("message_delta"), `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":`...)
	b = appendInt(b, r.completionTokens())
	ev.send(append(b, "}}"...))
	ev.send(append(ev.event("message_stop"), `{"type":"message_stop"}`...))
}
