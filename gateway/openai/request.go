package openai

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits ParseRequest enforces on a request body. The body's total size is
// bounded by the server's body cap before it reaches this package.
const (
	// MaxNestingDepth is the deepest nesting of arrays and objects accepted
	// in a request body; the top-level object is depth 1.
	MaxNestingDepth = 128
	// MaxMessages is the most elements a chat request's messages array may
	// hold.
	MaxMessages = 100_000
	// MaxModelBytes is the longest model name accepted, in bytes.
	MaxModelBytes = 256
)

// Request is what the gateway needs to know about a request body.
type Request struct {
	// Model is the decoded "model" string: 1..MaxModelBytes bytes of valid
	// UTF-8 without control characters.
	Model string
	// Stream reports "stream": true. Always false for Embeddings, which do
	// not stream; a null or absent "stream" is false.
	Stream bool
	// IncludeUsage reports that the request itself set
	// "stream_options": {"include_usage": true}. It says nothing about the
	// Responses API, whose streams always carry usage.
	IncludeUsage bool
	// Prompt is the text to record, always JSON copied byte for byte from the
	// body (escapes and whitespace as sent):
	//   - ChatCompletions: the value of "messages" (an array);
	//   - Completions: the value of "prompt" (string or array), "" if absent;
	//   - Embeddings: the value of "input", "" if absent;
	//   - Responses: the value of "input", "" if absent; when "instructions"
	//     is a string it is recorded too, as the object
	//     {"instructions":<as sent>,"input":<as sent>} ("input" left out if
	//     absent), so that Prompt stays one JSON value.
	// It is at most as long as the body.
	Prompt string
	// MaxOutputTokens is the most the request lets the model generate:
	// "max_output_tokens" for Responses, "max_tokens" for Completions, the
	// larger of "max_tokens" and "max_completion_tokens" for chat; rounded
	// up and capped at MaxOutputTokensCap. 0 when absent, null, negative or
	// not a number (the upstream judges those); Embeddings have none.
	MaxOutputTokens int
	// User is OpenAI's "user" member: the caller's own end user, decoded;
	// "" when absent, null or empty. At most MaxUserBytes of valid UTF-8
	// without control characters, else the request is refused.
	User string
}

// MaxUserBytes bounds Request.User: the end user is recorded on every
// row and is a group of the usage report, not free text.
const MaxUserBytes = 256

// MaxOutputTokensCap bounds Request.MaxOutputTokens, far above any model's
// output, so that estimates built on it cannot overflow.
const MaxOutputTokensCap = 1 << 30

// RequestError reports a request body the gateway refuses to forward. Msg is
// meant for the client (the OpenAI error body's "message"); Param names the
// offending parameter ("" for the body as a whole; the error body's "param"
// is then null). The proxy answers it with 400 and type
// "invalid_request_error".
type RequestError struct {
	Param string
	Msg   string
}

func (e *RequestError) Error() string {
	if e.Param == "" {
		return "invalid request: " + e.Msg
	}
	return "invalid request: " + e.Param + ": " + e.Msg
}

// The RequestErrors returned for the body as a whole. They are shared
// values: never mutate them.
var (
	errNotJSON   = &RequestError{Msg: "request body is not valid JSON"}
	errNotObject = &RequestError{Msg: "request body must be a JSON object"}
	errNotUTF8   = &RequestError{Msg: "request body is not valid UTF-8"}
	errDeep      = &RequestError{Msg: "request body nests arrays and objects deeper than " + strconv.Itoa(MaxNestingDepth) + " levels"}
)

// field is one top-level member ParseRequest reads.
type field struct {
	val  []byte // raw value; nil if absent
	seen bool
}

// requestFields holds the members ParseRequest reads; which ones it reads
// depends on the endpoint.
type requestFields struct {
	model, stream, streamOptions, prompt, instructions field
	maxTokens, maxCompletionTokens                     field
	user                                               field
}

// slot returns where to keep the member named name for ep, and the name of
// the parameter it fills; nil for a member ep does not read.
func (f *requestFields) slot(ep Endpoint, name []byte) *field {
	switch string(name) {
	case "model":
		return &f.model
	case "stream":
		if ep != Embeddings {
			return &f.stream
		}
	case "stream_options":
		if ep != Embeddings && ep != Messages {
			return &f.streamOptions
		}
	case "messages":
		if ep == ChatCompletions || ep == Messages {
			return &f.prompt
		}
	case "system":
		if ep == Messages {
			return &f.instructions
		}
	case "prompt":
		if ep == Completions {
			return &f.prompt
		}
	case "input":
		if ep == Embeddings || ep == Responses {
			return &f.prompt
		}
	case "instructions":
		if ep == Responses {
			return &f.instructions
		}
	case "max_tokens":
		if ep == ChatCompletions || ep == Completions || ep == Messages {
			return &f.maxTokens
		}
	case "max_completion_tokens":
		if ep == ChatCompletions {
			return &f.maxCompletionTokens
		}
	case "max_output_tokens":
		if ep == Responses {
			return &f.maxTokens
		}
	case "user":
		if ep != Messages { // Anthropic's end user is metadata.user_id
			return &f.user
		}
	}
	return nil
}

// ParseRequest reads the members of a request body for ep that the gateway
// acts on, and refuses bodies the gateway must not forward with a
// *RequestError: invalid JSON or UTF-8, a top level that is not an object,
// nesting deeper than MaxNestingDepth, a duplicated member it reads (a
// duplicate "model" could route by one name and run another, a duplicate
// "max_tokens" reserve by one and generate by the other), a member
// whose name only case-folds to one it reads or that bounds generation
// ("MODEL", "Stream", "max_to\u212Aens", also inside stream_options: see
// fold.go), whether or not the exact name is present too, a bad model
// name, a non-boolean "stream", a malformed "stream_options", and for chat a
// missing or non-array "messages" or one longer than MaxMessages. An unknown
// ep is a programming error and returns a plain error.
//
// Cost is linear in len(body) with constant stack: one allocation-free pass
// that validates the JSON (RFC 8259, as encoding/json.Valid) while bounding
// nesting and finding the members, one UTF-8 pass, then two allocations
// (Model and Prompt). body is not retained. It is safe for concurrent use.
func ParseRequest(ep Endpoint, body []byte) (Request, error) {
	if !ep.valid() {
		return Request{}, fmt.Errorf("openai: parse request: unknown endpoint %d", ep)
	}
	open := skipWS(body, 0)
	if open == len(body) {
		return Request{}, errNotJSON
	}
	if body[open] != '{' {
		if err := checkJSON(body, open); err != nil {
			return Request{}, err
		}
		return Request{}, errNotObject
	}

	var f requestFields
	it := newObjIter(body, open, 1)
	it.strict = true
	for {
		k, v, ok := it.next()
		if !ok {
			break
		}
		name := keyName(k)
		if ep == Messages {
			if err := anthropicOnly(name); err != nil {
				return Request{}, err
			}
		}
		slot := f.slot(ep, name)
		if slot == nil {
			if canon := misspelled(name); canon != "" {
				return Request{}, caseVariantError(string(name), canon)
			}
			continue
		}
		if slot.seen {
			return Request{}, &RequestError{Param: string(name), Msg: "'" + string(name) + "' is given more than once"}
		}
		slot.seen, slot.val = true, v
		if slot == &f.prompt && ep == ChatCompletions && it.count > MaxMessages && v[0] == '[' {
			return Request{}, &RequestError{Param: "messages", Msg: "'messages' has more than " + strconv.Itoa(MaxMessages) + " elements"}
		}
	}
	if it.err != nil {
		if errors.Is(it.err, errTooDeep) {
			return Request{}, errDeep
		}
		return Request{}, errNotJSON
	}
	if skipWS(body, it.i) != len(body) {
		return Request{}, errNotJSON
	}
	if !utf8.Valid(body) {
		return Request{}, errNotUTF8
	}

	var req Request
	model, err := parseModel(f.model)
	if err != nil {
		return Request{}, err
	}
	if f.stream.seen {
		switch string(f.stream.val) {
		case "true":
			req.Stream = true
		case "false", "null":
		default:
			return Request{}, &RequestError{Param: "stream", Msg: "'stream' must be a boolean"}
		}
	}
	if f.streamOptions.seen {
		if req.IncludeUsage, err = parseStreamOptions(f.streamOptions.val); err != nil {
			return Request{}, err
		}
	}
	if err := checkPrompt(ep, &f); err != nil {
		return Request{}, err
	}
	req.Model = model
	req.Prompt = promptText(ep, &f)
	req.MaxOutputTokens = max(outputCap(f.maxTokens), outputCap(f.maxCompletionTokens))
	if req.User, err = parseUser(f.user); err != nil {
		return Request{}, err
	}
	return req, nil
}

// parseUser validates and decodes the "user" member (a string or null).
func parseUser(f field) (string, error) {
	const param = "user"
	if !f.seen || string(f.val) == "null" {
		return "", nil
	}
	if f.val[0] != '"' {
		return "", &RequestError{Param: param, Msg: "'user' must be a string"}
	}
	name, exact := unquote(f.val[1 : len(f.val)-1])
	switch {
	case len(name) > MaxUserBytes:
		return "", &RequestError{Param: param, Msg: "'user' is longer than " + strconv.Itoa(MaxUserBytes) + " bytes"}
	case !exact || !printable(name):
		return "", &RequestError{Param: param, Msg: "'user' must be valid UTF-8 without control characters"}
	}
	return string(name), nil
}

// outputCap reads an output token limit: a JSON number rounded up and
// capped at MaxOutputTokensCap, or 0 when absent, negative or not a number.
// Fractions and exponents count as the number they denote, so that
// "1e6" reserves as much as 1000000 wherever an upstream accepts it.
func outputCap(f field) int {
	if !f.seen || len(f.val) == 0 || f.val[0] != '-' && (f.val[0] < '0' || f.val[0] > '9') {
		return 0
	}
	n, err := strconv.ParseFloat(string(f.val), 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) || !(n > 0) { // NaN cannot occur in JSON
		return 0
	}
	if n >= MaxOutputTokensCap {
		return MaxOutputTokensCap
	}
	return int(math.Ceil(n))
}

// checkJSON reports why body, whose first value starts at body[i], is not
// acceptable JSON: too deep, or invalid; nil if it is valid.
func checkJSON(body []byte, i int) error {
	end, _, err := validValue(body, i, 0)
	switch {
	case errors.Is(err, errTooDeep):
		return errDeep
	case err != nil || skipWS(body, end) != len(body):
		return errNotJSON
	}
	return nil
}

// parseModel validates and decodes the "model" member.
func parseModel(f field) (string, error) {
	const param = "model"
	if !f.seen || string(f.val) == "null" {
		return "", &RequestError{Param: param, Msg: "you must provide a model parameter"}
	}
	if f.val[0] != '"' {
		return "", &RequestError{Param: param, Msg: "'model' must be a string"}
	}
	raw := f.val[1 : len(f.val)-1]
	name, exact := unquote(raw) // allocates only if there are escapes
	switch {
	case len(name) == 0:
		return "", &RequestError{Param: param, Msg: "'model' must not be empty"}
	case len(name) > MaxModelBytes:
		return "", &RequestError{Param: param, Msg: "'model' is longer than " + strconv.Itoa(MaxModelBytes) + " bytes"}
	case !exact || !printable(name):
		return "", &RequestError{Param: param, Msg: "'model' must be valid UTF-8 without control characters"}
	}
	return string(name), nil
}

// printable reports whether b is valid UTF-8 without C0, DEL or C1 control
// characters.
func printable(b []byte) bool {
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return false
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 || r >= 0x80 && r <= 0x9f {
			return false
		}
		i += n
	}
	return true
}

// parseStreamOptions validates "stream_options" (an object or null) and
// reports whether it sets include_usage to true.
func parseStreamOptions(v []byte) (includeUsage bool, err error) {
	if string(v) == "null" {
		return false, nil
	}
	if v[0] != '{' {
		return false, &RequestError{Param: "stream_options", Msg: "'stream_options' must be an object"}
	}
	var seen bool
	it := newObjIter(v, 0, 2)
	for {
		k, val, ok := it.next()
		if !ok {
			break
		}
		if name := keyName(k); string(name) != "include_usage" {
			if misspelledIncludeUsage(name) {
				return false, caseVariantError("stream_options."+string(name), "stream_options.include_usage")
			}
			continue
		}
		if seen {
			return false, &RequestError{Param: "stream_options.include_usage", Msg: "'stream_options.include_usage' is given more than once"}
		}
		seen = true
		switch string(val) {
		case "true":
			includeUsage = true
		case "false", "null":
		default:
			return false, &RequestError{Param: "stream_options.include_usage", Msg: "'stream_options.include_usage' must be a boolean"}
		}
	}
	if it.err != nil { // unreachable after validation; kept for safety
		return false, errNotJSON
	}
	return includeUsage, nil
}

// checkPrompt validates the type of the member that becomes Prompt.
func checkPrompt(ep Endpoint, f *requestFields) error {
	p := f.prompt
	if ep == ChatCompletions || ep == Messages {
		if !p.seen || string(p.val) == "null" {
			return &RequestError{Param: "messages", Msg: "'messages' is required"}
		}
		if p.val[0] != '[' {
			return &RequestError{Param: "messages", Msg: "'messages' must be an array"}
		}
		if in := f.instructions; ep == Messages && in.seen && in.val[0] != '"' && in.val[0] != '[' && string(in.val) != "null" {
			return &RequestError{Param: "system", Msg: "'system' must be a string or an array of content blocks"}
		}
		return nil
	}
	if p.seen && p.val[0] != '"' && p.val[0] != '[' && string(p.val) != "null" {
		name := "input"
		if ep == Completions {
			name = "prompt"
		}
		return &RequestError{Param: name, Msg: "'" + name + "' must be a string or an array"}
	}
	if in := f.instructions; in.seen && in.val[0] != '"' && string(in.val) != "null" {
		return &RequestError{Param: "instructions", Msg: "'instructions' must be a string"}
	}
	return nil
}

// promptText builds Request.Prompt; see its doc.
func promptText(ep Endpoint, f *requestFields) string {
	input := f.prompt.val
	if string(input) == "null" {
		input = nil
	}
	pre, mid := `{"instructions":`, `,"input":`
	switch {
	case ep == Messages && f.instructions.seen && string(f.instructions.val) != "null":
		pre, mid = `{"system":`, `,"messages":`
	case ep != Responses || !f.instructions.seen || f.instructions.val[0] != '"':
		return string(input)
	}
	var b strings.Builder
	b.Grow(len(pre) + len(f.instructions.val) + len(mid) + len(input) + 1)
	b.WriteString(pre)
	b.Write(f.instructions.val)
	if input != nil {
		b.WriteString(mid)
		b.Write(input)
	}
	b.WriteByte('}')
	return b.String()
}
