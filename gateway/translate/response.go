package translate

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// msgUsage is a Messages usage object.
type msgUsage struct {
	InputTokens              int `json:"input_tokens"`
	OutputTokens             int `json:"output_tokens"`
	CacheCreationInputTokens int `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int `json:"cache_read_input_tokens"`
}

// prompt is the chat usage's prompt_tokens: Anthropic counts the cached
// parts of the prompt apart from input_tokens, OpenAI inside it (as the
// gateway records it, openai.anthropicUsage).
func (u *msgUsage) prompt() int {
	return u.InputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens
}

// respBlock is a content block of a Messages answer.
type respBlock struct {
	Type  string          `json:"type"`
	Text  string          `json:"text"`
	ID    string          `json:"id"`
	Name  string          `json:"name"`
	Input json.RawMessage `json:"input"`
}

type msgResponse struct {
	ID         string      `json:"id"`
	Type       string      `json:"type"`
	Model      string      `json:"model"`
	Content    []respBlock `json:"content"`
	StopReason string      `json:"stop_reason"`
	Usage      msgUsage    `json:"usage"`
}

// FinishReason maps an Anthropic stop_reason to the chat finish_reason.
func FinishReason(stop string) string {
	switch stop {
	case "max_tokens", "model_context_window_exceeded":
		return "length"
	case "tool_use":
		return "tool_calls"
	case "refusal":
		return "content_filter"
	}
	return "stop" // end_turn, stop_sequence, pause_turn
}

// Response translates a Messages answer into a chat.completion object
// created at unix time created. ok is false for a body that is not a
// Messages answer (the proxy answers 502).
func Response(body []byte, created int64) (out []byte, ok bool) {
	var m msgResponse
	if json.Unmarshal(body, &m) != nil || m.Type != "message" {
		return nil, false
	}
	out = make([]byte, 0, len(body)+256)
	out = append(out, `{"id":`...)
	out = appendString(out, "chatcmpl-"+m.ID)
	out = append(out, `,"object":"chat.completion","created":`...)
	out = strconv.AppendInt(out, created, 10)
	out = append(out, `,"model":`...)
	out = appendString(out, m.Model)
	out = append(out, `,"choices":[{"index":0,"message":{"role":"assistant","content":`...)
	text, calls := 0, 0
	for _, b := range m.Content {
		switch b.Type {
		case "text":
			text++
		case "tool_use":
			calls++
		}
	}
	if text == 0 {
		out = append(out, "null"...)
	} else {
		out = append(out, '"')
		for _, b := range m.Content {
			if b.Type == "text" {
				out = appendStringBody(out, b.Text)
			}
		}
		out = append(out, '"')
	}
	out = append(out, `,"refusal":null`...)
	if calls > 0 {
		out = append(out, `,"tool_calls":[`...)
		n := 0
		for _, b := range m.Content {
			if b.Type != "tool_use" {
				continue
			}
			if n > 0 {
				out = append(out, ',')
			}
			n++
			out = appendToolCall(out, b.ID, b.Name, b.Input)
		}
		out = append(out, ']')
	}
	out = append(out, `},"logprobs":null,"finish_reason":`...)
	out = appendString(out, FinishReason(m.StopReason))
	out = append(out, `}],"usage":`...)
	out = appendUsage(out, &m.Usage)
	return append(out, '}'), true
}

// appendToolCall appends one chat tool call; arguments is the JSON text
// of the tool_use input, as a string.
func appendToolCall(dst []byte, id, name string, input json.RawMessage) []byte {
	dst = append(dst, `{"id":`...)
	dst = appendString(dst, id)
	dst = append(dst, `,"type":"function","function":{"name":`...)
	dst = appendString(dst, name)
	dst = append(dst, `,"arguments":`...)
	if len(input) == 0 {
		input = json.RawMessage("{}")
	}
	dst = appendString(dst, string(input))
	return append(dst, "}}"...)
}

// appendUsage appends the chat usage object of u.
func appendUsage(dst []byte, u *msgUsage) []byte {
	p := u.prompt()
	dst = append(dst, `{"prompt_tokens":`...)
	dst = strconv.AppendInt(dst, int64(p), 10)
	dst = append(dst, `,"completion_tokens":`...)
	dst = strconv.AppendInt(dst, int64(u.OutputTokens), 10)
	dst = append(dst, `,"total_tokens":`...)
	dst = strconv.AppendInt(dst, int64(p+u.OutputTokens), 10)
	dst = append(dst, `,"prompt_tokens_details":{"cached_tokens":`...)
	dst = strconv.AppendInt(dst, int64(u.CacheReadInputTokens), 10)
	return append(dst, "}}"...)
}

// Error is an Anthropic error answer read for its OpenAI translation.
type Error struct {
	Type    string // OpenAI's error type for it
	Message string // the upstream's message, "" if it had none
}

// ParseError reads an Anthropic error body ({"type":"error","error":
// {"type","message"}}); ok is false for any other body.
func ParseError(body []byte) (e Error, ok bool) {
	var b struct {
		Type  string `json:"type"`
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &b) != nil || b.Type != "error" {
		return Error{}, false
	}
	e.Message = b.Error.Message
	switch b.Error.Type {
	case "invalid_request_error", "not_found_error", "request_too_large":
		e.Type = "invalid_request_error"
	case "rate_limit_error":
		e.Type = "requests"
	default:
		e.Type = "server_error"
	}
	return e, true
}

// appendString appends s as a JSON string.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	dst = appendStringBody(dst, s)
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"

// appendStringBody appends s escaped for the inside of a JSON string:
// quotes, backslashes, control characters, U+2028 and U+2029, and
// invalid UTF-8 as U+FFFD.
func appendStringBody(dst []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(dst, s[start:]...)
}
