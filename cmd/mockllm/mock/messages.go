package mock

import (
	"bytes"
	"encoding/json"

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
	r.tool = toolToCall(rc.PostBody())
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

// mockToolInput is the input of every tool call the mock makes.
const mockToolInput = `{"query":"mock"}`

// toolToCall returns the tool the answer calls: the first of the request's
// tools, unless its last message carries a tool result (the conversation
// has had its call) or tool_choice is none; "" answers with text.
func toolToCall(body []byte) string {
	var probe struct {
		Tools []struct {
			Name string `json:"name"`
		} `json:"tools"`
		ToolChoice struct {
			Type string `json:"type"`
			Name string `json:"name"`
		} `json:"tool_choice"`
		Messages []struct {
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
	}
	if json.Unmarshal(body, &probe) != nil || len(probe.Tools) == 0 || probe.ToolChoice.Type == "none" {
		return ""
	}
	if n := len(probe.Messages); n > 0 && bytes.Contains(probe.Messages[n-1].Content, []byte(`"tool_result"`)) {
		return ""
	}
	if probe.ToolChoice.Type == "tool" {
		return probe.ToolChoice.Name
	}
	return probe.Tools[0].Name
}

// appendToolUse appends the tool_use block calling r.tool; input is its
// input (the whole of it, or "{}" as content_block_start has it).
func appendToolUse(dst []byte, r *reply, input string) []byte {
	dst = append(dst, `{"type":"tool_use","id":"`...)
	dst = appendID(dst, "toolu_mock", r.seq)
	dst = append(dst, `","name":`...)
	dst = appendJSONString(dst, r.tool)
	dst = append(dst, `,"input":`...)
	dst = append(dst, input...)
	return append(dst, '}')
}

// stopReason is the answer's stop_reason.
func (r *reply) stopReason() string {
	if r.tool != "" {
		return `"tool_use"`
	}
	return `"end_turn"`
}

// appendMessageStart appends the message object: complete (content, stop
// reason, usage) or as message_start carries it (no content yet).
func appendMessageStart(dst []byte, r *reply, complete bool) []byte {
	dst = append(dst, `{"id":"`...)
	dst = appendID(dst, "msg_mock", r.seq)
	dst = append(dst, `","type":"message","role":"assistant","model":`...)
	dst = appendJSONString(dst, r.model)
	dst = append(dst, `,"content":[`...)
	if complete && r.tool != "" {
		dst = appendToolUse(dst, r, mockToolInput)
	} else if complete {
		dst = append(dst, `{"type":"text","text":`...)
		dst = append(dst, r.text.quoted...)
		dst = append(dst, '}')
	}
	dst = append(dst, `],"stop_reason":`...)
	if complete {
		dst = append(dst, r.stopReason()...)
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
	if r.tool != "" {
		writeToolUseStream(ev, r)
		return
	}
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

// writeToolUseStream writes the rest of a stream that calls r.tool: the
// tool_use block, its input in two input_json_delta pieces, the stop.
func writeToolUseStream(ev *events, r *reply) {
	b := append(ev.event("content_block_start"), `{"type":"content_block_start","index":0,"content_block":`...)
	b = appendToolUse(b, r, "{}")
	ev.send(append(b, '}'))
	half := len(mockToolInput) / 2
	for _, piece := range []string{mockToolInput[:half], mockToolInput[half:]} {
		ev.pause()
		b = append(ev.event("content_block_delta"), `{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":`...)
		b = appendJSONString(b, piece)
		ev.send(append(b, "}}"...))
	}
	ev.send(append(ev.event("content_block_stop"), `{"type":"content_block_stop","index":0}`...))
	b = append(ev.event("message_delta"), `{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":`...)
	b = appendInt(b, r.completionTokens())
	ev.send(append(b, "}}"...))
	ev.send(append(ev.event("message_stop"), `{"type":"message_stop"}`...))
}
