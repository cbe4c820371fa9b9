package mock

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// defaultModel is echoed when a request names no model. mockllm is lenient
// here where OpenAI answers 400, so that hand-written test requests stay
// short.
const defaultModel = "mock-1"

// request is the subset of every OpenAI request body that mockllm reads.
// One struct serves all endpoints; each reads only its own fields.
type request struct {
	Model string `json:"model"`

	// Messages is the chat conversation (/v1/chat/completions).
	Messages []message `json:"messages"`

	// Prompt is the legacy completion prompt (/v1/completions): a string
	// or an array of strings.
	Prompt textSum `json:"prompt"`

	// Input is the Responses API input: a string or an array of input
	// items. (Embeddings decode their input separately, item by item.)
	Input textSum `json:"input"`

	// Instructions is the Responses API system prompt.
	Instructions textSum `json:"instructions"`

	// System and MaxTokens are the Messages API's system prompt (a string
	// or text blocks) and its required output bound.
	System    textSum `json:"system"`
	MaxTokens *int    `json:"max_tokens"`

	Stream        bool `json:"stream"`
	StreamOptions struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

// message is one chat message. Only its content is read; a null content
// (an assistant tool call) counts as empty.
type message struct {
	Content textSum `json:"content"`
}

// model returns the model to echo: the requested one, or defaultModel.
func (r *request) model() string {
	if r.Model == "" {
		return defaultModel
	}
	return r.Model
}

// Prompt token estimates. They are deterministic functions of the request,
// not a real tokenizer:
//
//	chat:        ceil(C / 4) + 4 × (number of messages)
//	responses:   ceil(C / 4) + 4 × (number of input items, plus 1 if
//	             instructions are set); a string input is one item
//	completions: ceil(C / 4)
//	embeddings:  Σ ceil(Cᵢ / 4) over the inputs
//
// where C is the total number of characters (Unicode code points) of all the
// text read from the request: message contents, the "text" of content parts,
// prompts, inputs and instructions.
const perMessageTokens = 4

// tokensFor returns ceil(chars / 4).
func tokensFor(chars int) int { return (chars + 3) / 4 }

// chatPromptTokens implements the chat formula above.
func (r *request) chatPromptTokens() int {
	chars := 0
	for _, m := range r.Messages {
		chars += m.Content.chars
	}
	return tokensFor(chars) + perMessageTokens*len(r.Messages)
}

// responsesPromptTokens implements the responses formula above.
func (r *request) responsesPromptTokens() int {
	items := r.Input.items + r.Instructions.items
	return tokensFor(r.Input.chars+r.Instructions.chars) + perMessageTokens*items
}

// completionPromptTokens implements the completions formula above.
func (r *request) completionPromptTokens() int { return tokensFor(r.Prompt.chars) }

// textItem summarises one piece of request text without keeping it.
type textItem struct {
	chars int    // length in Unicode code points
	hash  uint64 // FNV-1a 64 of the UTF-8 bytes; see decodeTexts for objects
}

// textSum is a free-text field (see decodeTexts) reduced to its item count
// and total characters; decoding it allocates nothing for plain strings.
type textSum struct {
	items int
	chars int
}

// textList is a free-text field (see decodeTexts) kept item by item, for
// embeddings.
type textList []textItem

var (
	_ json.Unmarshaler = (*textSum)(nil)
	_ json.Unmarshaler = (*textList)(nil)
)

// UnmarshalJSON implements json.Unmarshaler.
func (t *textSum) UnmarshalJSON(b []byte) error {
	*t = textSum{}
	return decodeTexts(b, func(it textItem) {
		t.items++
		t.chars += it.chars
	})
}

// UnmarshalJSON implements json.Unmarshaler.
func (t *textList) UnmarshalJSON(b []byte) error {
	*t = (*t)[:0]
	return decodeTexts(b, func(it textItem) { *t = append(*t, it) })
}

// decodeTexts decodes the free-text shapes of the OpenAI APIs and calls add
// for each item. null has no items; a string is one item; an array has one
// item per element, where an element is a string or an object. An object
// item sums its "text" string and, recursively, its "content" (a string or
// an array of parts), so chat messages with content parts and Responses
// input items both work; its hash combines the hashes of those pieces.
// Other JSON values, such as the token-id arrays the real APIs accept, are
// an error. b has already been validated by encoding/json.
func decodeTexts(b []byte, add func(textItem)) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return errors.New("empty value")
	}
	switch b[0] {
	case 'n':
		return nil
	case '"', '{':
		it, err := decodeTextItem(b)
		if err != nil {
			return err
		}
		add(it)
		return nil
	case '[':
		var elems []json.RawMessage
		if err := json.Unmarshal(b, &elems); err != nil {
			return err
		}
		for i, e := range elems {
			it, err := decodeTextItem(e)
			if err != nil {
				return fmt.Errorf("element %d: %w", i, err)
			}
			add(it)
		}
		return nil
	default:
		return fmt.Errorf("unsupported value %.20q: want a string, an array or null", b)
	}
}

// decodeTextItem decodes one string or object element of a free-text field.
func decodeTextItem(b []byte) (textItem, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return textItem{}, errors.New("empty value")
	}
	switch b[0] {
	case '"':
		if s, ok := plainJSONString(b); ok {
			return textItem{chars: utf8.RuneCount(s), hash: fnv1a(fnvOffset, s)}, nil
		}
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return textItem{}, err
		}
		return textItem{chars: utf8.RuneCountInString(s), hash: fnv1a(fnvOffset, s)}, nil
	case '{':
		var o struct {
			Text    string   `json:"text"`
			Content textList `json:"content"`
		}
		if err := json.Unmarshal(b, &o); err != nil {
			return textItem{}, err
		}
		it := textItem{chars: utf8.RuneCountInString(o.Text), hash: fnv1a(fnvOffset, o.Text)}
		for _, c := range o.Content {
			it.chars += c.chars
			it.hash = (it.hash ^ c.hash) * fnvPrime
		}
		return it, nil
	default:
		return textItem{}, fmt.Errorf("unsupported value %.20q: want a string or an object", b)
	}
}

// plainJSONString returns the value of the JSON string literal b without
// decoding it, when b has no escapes and is valid UTF-8 so that its bytes
// are its value. b must be a valid JSON value.
func plainJSONString(b []byte) ([]byte, bool) {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return nil, false
	}
	s := b[1 : len(b)-1]
	if bytes.IndexByte(s, '\\') >= 0 || !utf8.Valid(s) {
		return nil, false
	}
	return s, true
}

// FNV-1a 64-bit parameters.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// fnv1a continues an FNV-1a 64 hash h over s.
func fnv1a[T string | []byte](h uint64, s T) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}
