package translate

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
)

// ErrMalformed reports a Messages stream event that cannot be translated:
// data that is not a JSON event, or content before message_start.
var ErrMalformed = errors.New("translate: malformed Anthropic stream event")

// StreamError is an error event in a Messages stream (Anthropic reports
// failures after the 200 this way, e.g. overloaded_error).
type StreamError struct {
	Type string // Anthropic's error type
}

func (e *StreamError) Error() string { return "anthropic stream error: " + e.Type }

// maxBlocks bounds the content block indexes a stream may use, and so the
// memory of the block-to-tool-call map.
const maxBlocks = 4096

// Stream translates one Messages event stream into chat.completion.chunk
// events. Feed it complete events in order (Events); it is not safe for
// concurrent use. Reuse one through Reset.
type Stream struct {
	includeUsage bool
	created      int64
	head         []byte // every chunk's start, up to and including `"choices":[`
	toolOf       []int  // content block index → tool call index + 1 (0: not a tool_use block)
	tools        int
	usage        msgUsage
	done         bool
	ev           event
}

type event struct {
	Type         string       `json:"type"`
	Message      *msgResponse `json:"message"`
	Index        int          `json:"index"`
	ContentBlock *respBlock   `json:"content_block"`
	Delta        struct {
		Type        string `json:"type"`
		Text        string `json:"text"`
		PartialJSON string `json:"partial_json"`
		StopReason  string `json:"stop_reason"`
	} `json:"delta"`
	Usage *struct {
		InputTokens              *int `json:"input_tokens"`
		OutputTokens             *int `json:"output_tokens"`
		CacheCreationInputTokens *int `json:"cache_creation_input_tokens"`
		CacheReadInputTokens     *int `json:"cache_read_input_tokens"`
	} `json:"usage"`
	Error *struct {
		Type string `json:"type"`
	} `json:"error"`
}

// Reset readies s for a new stream: includeUsage is the caller's
// stream_options.include_usage, created the chunks' unix time.
func (s *Stream) Reset(includeUsage bool, created int64) {
	s.includeUsage, s.created = includeUsage, created
	s.head, s.toolOf, s.tools, s.usage, s.done = s.head[:0], s.toolOf[:0], 0, msgUsage{}, false
}

// Done reports whether message_stop has been translated (and with it the
// chat stream's "data: [DONE]").
func (s *Stream) Done() bool { return s.done }

// Events translates the complete events in p (one or more, as
// openai.StreamTee forwards them) and appends the chat events to dst.
// Only data lines are read (event names repeat the data's type); ping and
// unknown event types are skipped. It returns ErrMalformed or a
// *StreamError, with what was translated before it.
func (s *Stream) Events(dst, p []byte) ([]byte, error) {
	for len(p) > 0 {
		var line []byte
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			line, p = p[:i], p[i+1:]
		} else {
			line, p = p, nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		data, ok := bytes.CutPrefix(line, []byte("data:"))
		if !ok {
			continue
		}
		var err error
		if dst, err = s.event(dst, bytes.TrimPrefix(data, []byte(" "))); err != nil {
			return dst, err
		}
	}
	return dst, nil
}

// event translates one event's data.
func (s *Stream) event(dst, data []byte) ([]byte, error) {
	s.ev = event{}
	e := &s.ev
	if json.Unmarshal(data, e) != nil {
		return dst, ErrMalformed
	}
	if s.done {
		return dst, nil // nothing follows message_stop
	}
	if e.Type == "error" {
		t := "api_error"
		if e.Error != nil {
			t = e.Error.Type
		}
		return dst, &StreamError{Type: t}
	}
	if e.Type == "message_start" {
		if e.Message == nil {
			return dst, ErrMalformed
		}
		s.startHead(e.Message)
		s.usage = e.Message.Usage
		return s.chunk(dst, `{"role":"assistant","content":""}`, "", nil), nil
	}
	if len(s.head) == 0 {
		switch e.Type {
		case "ping":
			return dst, nil
		case "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop":
			return dst, ErrMalformed // content before message_start
		}
		return dst, nil
	}
	switch e.Type {
	case "content_block_start":
		return s.blockStart(dst, e)
	case "content_block_delta":
		return s.blockDelta(dst, e)
	case "message_delta":
		s.readUsage(e)
		if e.Delta.StopReason != "" {
			dst = s.chunk(dst, `{}`, FinishReason(e.Delta.StopReason), nil)
		}
	case "message_stop":
		s.done = true
		if s.includeUsage {
			dst = append(dst, "data: "...)
			dst = append(dst, s.head...)
			dst = append(dst, `],"usage":`...)
			dst = appendUsage(dst, &s.usage)
			dst = append(dst, "}\n\n"...)
		}
		dst = append(dst, "data: [DONE]\n\n"...)
	}
	return dst, nil
}

// startHead builds the start every chunk shares from message_start.
func (s *Stream) startHead(m *msgResponse) {
	h := append(s.head[:0], `{"id":`...)
	h = appendString(h, "chatcmpl-"+m.ID)
	h = append(h, `,"object":"chat.completion.chunk","created":`...)
	h = strconv.AppendInt(h, s.created, 10)
	h = append(h, `,"model":`...)
	h = appendString(h, m.Model)
	s.head = append(h, `,"choices":[`...)
}

// readUsage takes message_delta's cumulative counts.
func (s *Stream) readUsage(e *event) {
	u := e.Usage
	if u == nil {
		return
	}
	for _, f := range [...]struct {
		src *int
		dst *int
	}{
		{u.InputTokens, &s.usage.InputTokens}, {u.OutputTokens, &s.usage.OutputTokens},
		{u.CacheCreationInputTokens, &s.usage.CacheCreationInputTokens}, {u.CacheReadInputTokens, &s.usage.CacheReadInputTokens},
	} {
		if f.src != nil {
			*f.dst = *f.src
		}
	}
}

// blockStart opens a content block: a tool_use block starts a tool call
// (its id and name, empty arguments); text with text is content.
func (s *Stream) blockStart(dst []byte, e *event) ([]byte, error) {
	b := e.ContentBlock
	if b == nil || e.Index < 0 || e.Index >= maxBlocks {
		return dst, ErrMalformed
	}
	switch b.Type {
	case "tool_use":
		for len(s.toolOf) <= e.Index {
			s.toolOf = append(s.toolOf, 0)
		}
		s.tools++
		s.toolOf[e.Index] = s.tools
		return s.chunk(dst, "", "", func(d []byte) []byte {
			d = append(d, `{"tool_calls":[{"index":`...)
			d = strconv.AppendInt(d, int64(s.tools-1), 10)
			d = append(d, `,"id":`...)
			d = appendString(d, b.ID)
			d = append(d, `,"type":"function","function":{"name":`...)
			d = appendString(d, b.Name)
			return append(d, `,"arguments":""}}]}`...)
		}), nil
	case "text":
		if b.Text != "" {
			return s.content(dst, b.Text), nil
		}
	}
	return dst, nil
}

// blockDelta translates text deltas to content and input_json_delta to
// tool call argument deltas; thinking and signature deltas are not part
// of the chat API and are skipped.
func (s *Stream) blockDelta(dst []byte, e *event) ([]byte, error) {
	d := &e.Delta
	if e.Index < 0 || e.Index >= maxBlocks {
		return dst, ErrMalformed
	}
	switch d.Type {
	case "text_delta":
		return s.content(dst, d.Text), nil
	case "input_json_delta":
		if e.Index >= len(s.toolOf) || s.toolOf[e.Index] == 0 {
			return dst, ErrMalformed // arguments of no tool call
		}
		tool := s.toolOf[e.Index] - 1
		return s.chunk(dst, "", "", func(b []byte) []byte {
			b = append(b, `{"tool_calls":[{"index":`...)
			b = strconv.AppendInt(b, int64(tool), 10)
			b = append(b, `,"function":{"arguments":`...)
			b = appendString(b, d.PartialJSON)
			return append(b, `}}]}`...)
		}), nil
	}
	return dst, nil
}

// content appends a chunk whose delta is text.
func (s *Stream) content(dst []byte, text string) []byte {
	return s.chunk(dst, "", "", func(b []byte) []byte {
		b = append(b, `{"content":`...)
		b = appendString(b, text)
		return append(b, '}')
	})
}

// chunk appends one chat.completion.chunk event: its delta is delta, or
// what writeDelta appends; finish is its finish_reason ("" for null).
func (s *Stream) chunk(dst []byte, delta, finish string, writeDelta func([]byte) []byte) []byte {
	dst = append(dst, "data: "...)
	dst = append(dst, s.head...)
	dst = append(dst, `{"index":0,"delta":`...)
	if writeDelta != nil {
		dst = writeDelta(dst)
	} else {
		dst = append(dst, delta...)
	}
	dst = append(dst, `,"logprobs":null,"finish_reason":`...)
	if finish == "" {
		dst = append(dst, "null"...)
	} else {
		dst = appendString(dst, finish)
	}
	return append(dst, "}]}\n\n"...)
}
