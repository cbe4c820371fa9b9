package mock

import "github.com/valyala/fasthttp"

// responses serves POST /v1/responses: a minimal Responses API object with
// one assistant message, or with "stream": true the typed event stream
// (response.created … response.completed). Unlike chat, a Responses stream
// always ends with usage (in response.completed) and has no [DONE].
func (s *Server) responses(rc *fasthttp.RequestCtx, k knobs) error {
	var req request
	if err := decodeBody(rc, &req); err != nil {
		return err
	}
	r := s.newReply(&req, k, req.responsesPromptTokens())
	if req.Stream {
		s.startSSE(rc, r, writeResponsesStream)
		return nil
	}
	buf := s.getBuf()
	*buf = appendCompletedResponse((*buf)[:0], &r)
	s.sendJSON(rc, buf)
	return nil
}

// appendCompletedResponse appends the completed response object.
func appendCompletedResponse(dst []byte, r *reply) []byte {
	return appendResponse(dst, r, true)
}

// appendResponse appends a response object, in_progress (no output, null
// usage) or completed.
func appendResponse(dst []byte, r *reply, completed bool) []byte {
	dst = append(dst, `{"id":"`...)
	dst = appendID(dst, "resp_mock", r.seq)
	dst = append(dst, `","object":"response","created_at":`...)
	dst = appendInt(dst, int(r.created))
	if completed {
		dst = append(dst, `,"status":"completed"`...)
	} else {
		dst = append(dst, `,"status":"in_progress"`...)
	}
	dst = append(dst, `,"error":null,"incomplete_details":null,"instructions":null,"model":`...)
	dst = appendJSONString(dst, r.model)
	dst = append(dst, `,"output":[`...)
	if completed {
		dst = appendMessageItem(dst, r, true)
	}
	dst = append(dst, `],"parallel_tool_calls":true,"tool_choice":"auto","tools":[],"usage":`...)
	if !completed {
		return append(dst, "null}"...)
	}
	c := r.completionTokens()
	dst = append(dst, `{"input_tokens":`...)
	dst = appendInt(dst, r.prompt)
	dst = append(dst, `,"input_tokens_details":{"cached_tokens":`...)
	dst = appendInt(dst, max(r.cachedIn, 0))
	dst = append(dst, `},"output_tokens":`...)
	dst = appendInt(dst, c)
	dst = append(dst, `,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":`...)
	dst = appendInt(dst, r.prompt+c)
	return append(dst, "}}"...)
}

// appendMessageItem appends the assistant message output item, empty and
// in_progress or completed with the full text.
func appendMessageItem(dst []byte, r *reply, completed bool) []byte {
	dst = append(dst, `{"id":"`...)
	dst = appendID(dst, "msg_mock", r.seq)
	if !completed {
		return append(dst, `","type":"message","status":"in_progress","role":"assistant","content":[]}`...)
	}
	dst = append(dst, `","type":"message","status":"completed","role":"assistant","content":[`...)
	dst = appendOutputText(dst, r.text.quoted)
	return append(dst, "]}"...)
}

// appendOutputText appends an output_text content part whose text is the
// JSON string literal quoted.
func appendOutputText(dst, quoted []byte) []byte {
	dst = append(dst, `{"type":"output_text","text":`...)
	dst = append(dst, quoted...)
	return append(dst, `,"annotations":[]}`...)
}

// responsesEvent starts a typed event: the SSE event line and the JSON
// payload up to and including its sequence_number.
func responsesEvent(ev *events, name string, seq int) []byte {
	b := ev.event(name)
	b = append(b, `{"type":"`...)
	b = append(b, name...)
	b = append(b, `","sequence_number":`...)
	return appendInt(b, seq)
}

// appendItemRef appends the item_id, output_index and content_index that
// content events carry.
func appendItemRef(dst []byte, r *reply) []byte {
	dst = append(dst, `,"item_id":"`...)
	dst = appendID(dst, "msg_mock", r.seq)
	return append(dst, `","output_index":0,"content_index":0`...)
}

// writeResponsesStream writes the Responses API event stream:
// response.created, response.in_progress, response.output_item.added,
// response.content_part.added, r.chunks response.output_text.delta events
// (each after Options.ChunkDelay), response.output_text.done,
// response.content_part.done, response.output_item.done and
// response.completed, whose response carries the usage.
func writeResponsesStream(ev *events, r *reply) {
	seq := 0
	next := func(name string) []byte {
		b := responsesEvent(ev, name, seq)
		seq++
		return b
	}

	b := append(next("response.created"), `,"response":`...)
	b = appendResponse(b, r, false)
	ev.send(append(b, '}'))

	b = append(next("response.in_progress"), `,"response":`...)
	b = appendResponse(b, r, false)
	ev.send(append(b, '}'))

	b = append(next("response.output_item.added"), `,"output_index":0,"item":`...)
	b = appendMessageItem(b, r, false)
	ev.send(append(b, '}'))

	b = appendItemRef(next("response.content_part.added"), r)
	b = append(b, `,"part":`...)
	b = appendOutputText(b, []byte(`""`))
	ev.send(append(b, '}'))

	for i := 0; i < r.chunks && ev.err == nil; i++ {
		ev.pause()
		b = appendItemRef(next("response.output_text.delta"), r)
		b = append(b, `,"delta":`...)
		b = appendJSONString(b, r.text.chunk(i, r.chunks))
		ev.send(append(b, '}'))
	}

	b = appendItemRef(next("response.output_text.done"), r)
	b = append(b, `,"text":`...)
	b = append(b, r.text.quoted...)
	ev.send(append(b, '}'))

	b = appendItemRef(next("response.content_part.done"), r)
	b = append(b, `,"part":`...)
	b = appendOutputText(b, r.text.quoted)
	ev.send(append(b, '}'))

	b = append(next("response.output_item.done"), `,"output_index":0,"item":`...)
	b = appendMessageItem(b, r, true)
	ev.send(append(b, '}'))

	b = append(next("response.completed"), `,"response":`...)
	b = appendResponse(b, r, true)
	ev.send(append(b, '}'))
}
