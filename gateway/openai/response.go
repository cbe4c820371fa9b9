package openai

import (
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/valyala/fastjson"
)

// UsageSource says where the token counts of a Usage come from; it is
// recorded with them.
type UsageSource string

// The usage sources. No function of this package returns the empty
// UsageSource.
const (
	UsageNone      UsageSource = "none"      // no counts: upstream reported none and nothing was estimated
	UsageUpstream  UsageSource = "upstream"  // counts reported by upstream
	UsageEstimated UsageSource = "estimated" // counts from EstimateIfMissing
)

// Usage is the token usage of one request.
type Usage struct {
	PromptTokens     int // input tokens (Responses API input_tokens)
	CompletionTokens int // output tokens (Responses API output_tokens); 0 for embeddings
	TotalTokens      int // as reported, else PromptTokens+CompletionTokens
	Source           UsageSource
}

// Result is what the gateway records about an answer.
type Result struct {
	// Text is the assembled response text, at most the maxText given to
	// ParseResponse or the StreamTee, cut at a UTF-8 rune boundary. It is
	// copied from the upstream JSON with escapes decoded; it may contain any
	// character JSON can escape, NUL included.
	Text string
	// Truncated reports that the text was longer than maxText; nothing after
	// the cut was stored, not even text that would have fit.
	Truncated bool
	// TextBytes counts the bytes of response text seen, including those
	// beyond maxText. EstimateIfMissing estimates output tokens from it.
	TextBytes int
	Usage     Usage
	// FinishReason is choices[0].finish_reason for chat and completions
	// ("stop", "length", "tool_calls", "content_filter", …) and the response
	// status for the Responses API ("completed", "incomplete", "failed", …);
	// "" if not seen. At most maxFinishReason bytes.
	FinishReason string
}

// maxFinishReason bounds Result.FinishReason against a hostile upstream.
const maxFinishReason = 64

// finishReason returns b as a string, without allocating for the values
// OpenAI sends, cut to maxFinishReason bytes.
func finishReason(b []byte) string {
	switch string(b) {
	case "stop":
		return "stop"
	case "length":
		return "length"
	case "tool_calls":
		return "tool_calls"
	case "content_filter":
		return "content_filter"
	case "function_call":
		return "function_call"
	case "completed":
		return "completed"
	case "incomplete":
		return "incomplete"
	case "failed":
		return "failed"
	case "cancelled":
		return "cancelled"
	}
	return string(truncateUTF8(b, maxFinishReason))
}

// truncateUTF8 returns the longest prefix of b of at most n bytes that does
// not end inside a UTF-8 rune.
func truncateUTF8(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	for n > 0 && !utf8.RuneStart(b[n]) {
		n--
	}
	return b[:n]
}

// textAcc assembles response text up to max bytes. The zero value stores
// nothing; set max. With borrow set, a single piece is kept by reference
// (for pieces that outlive the accumulator's use, as in ParseResponse) and
// only a second piece copies.
type textAcc struct {
	buf       []byte
	first     []byte // borrowed single piece, when borrow is set
	borrow    bool
	max       int
	total     int
	truncated bool
}

func (a *textAcc) add(s []byte) {
	if len(s) == 0 {
		return
	}
	a.total += len(s)
	if a.truncated {
		return
	}
	have := len(a.buf) + len(a.first)
	if have+len(s) > a.max {
		s = truncateUTF8(s, a.max-have)
		a.truncated = true
	}
	if a.borrow && a.first == nil && a.buf == nil {
		a.first = s
		return
	}
	if a.first != nil {
		a.buf = append(make([]byte, 0, 2*(len(a.first)+len(s))), a.first...)
		a.first = nil
	}
	a.buf = append(a.buf, s...)
}

func (a *textAcc) String() string {
	if a.first != nil {
		return string(a.first)
	}
	return string(a.buf)
}

func (a *textAcc) reset(limit int) {
	a.buf, a.first = a.buf[:0], nil
	a.max, a.total, a.truncated = max(limit, 0), 0, false
}

// intField returns the non-negative integer member key of object v, and
// whether it is present as a number.
func intField(v *fastjson.Value, key string) (int, bool) {
	n := v.Get(key)
	if n == nil || n.Type() != fastjson.TypeNumber {
		return 0, false
	}
	i, err := n.Int()
	if err != nil {
		f, _ := n.Float64()
		if f > 1<<53 || f != f {
			return 0, false
		}
		i = int(f)
	}
	return max(i, 0), true
}

// usageFrom reads a usage object with the given input and output count
// names; ok is false unless v is an object with at least one count.
func usageFrom(v *fastjson.Value, in, out string) (u Usage, ok bool) {
	if v == nil || v.Type() != fastjson.TypeObject {
		return Usage{}, false
	}
	p, okP := intField(v, in)
	c, okC := intField(v, out)
	t, okT := intField(v, "total_tokens")
	if !okP && !okC && !okT {
		return Usage{}, false
	}
	if !okT {
		t = p + c
	}
	return Usage{PromptTokens: p, CompletionTokens: c, TotalTokens: t, Source: UsageUpstream}, true
}

// scanUsage reads a usage object from its raw JSON with the scanner, as
// usageFrom does from a parsed value: counts must be numbers; negative ones
// count as 0, fractional ones are truncated.
func scanUsage(raw []byte, in, out string) (u Usage, ok bool) {
	if len(raw) == 0 || raw[0] != '{' {
		return Usage{}, false
	}
	var okP, okC, okT, okAny bool
	it := newObjIter(raw, 0, 2)
	for {
		k, v, more := it.next()
		if !more {
			break
		}
		switch string(keyName(k)) {
		case in:
			if !okP {
				u.PromptTokens, okP = parseCount(v)
			}
		case out:
			if !okC {
				u.CompletionTokens, okC = parseCount(v)
			}
		case "total_tokens":
			if !okT {
				u.TotalTokens, okT = parseCount(v)
			}
		}
	}
	okAny = okP || okC || okT
	if it.err != nil || !okAny {
		return Usage{}, false
	}
	if !okT {
		u.TotalTokens = u.PromptTokens + u.CompletionTokens
	}
	u.Source = UsageUpstream
	return u, true
}

// parseCount reads a token count from a raw JSON number: digits fast,
// anything else through strconv. Non-numbers are not counts; negative
// numbers count 0.
func parseCount(raw []byte) (int, bool) {
	if len(raw) == 0 || raw[0] != '-' && (raw[0] < '0' || raw[0] > '9') {
		return 0, false
	}
	n := 0
	for i, c := range raw {
		if c < '0' || c > '9' || i >= 15 {
			f, err := strconv.ParseFloat(string(raw), 64)
			if err != nil || f != f {
				return 0, false
			}
			return int(min(max(f, 0), 1<<53)), true
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// isZeroNumber reports whether raw is a JSON number equal to 0.
func isZeroNumber(raw []byte) bool {
	if string(raw) == "0" {
		return true
	}
	if len(raw) == 0 || raw[0] != '-' && (raw[0] < '0' || raw[0] > '9') {
		return false
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	return err == nil && f == 0
}

// stringBytes returns the decoded bytes of v if it is a string.
func stringBytes(v *fastjson.Value) ([]byte, bool) {
	if v == nil || v.Type() != fastjson.TypeString {
		return nil, false
	}
	b, err := v.StringBytes()
	return b, err == nil
}

// firstChoice returns the first element of choices whose "index" is absent
// or a number equal to 0, or nil.
func firstChoice(choices *fastjson.Value) *fastjson.Value {
	if choices == nil || choices.Type() != fastjson.TypeArray {
		return nil
	}
	arr, _ := choices.Array()
	for _, c := range arr {
		if c.Type() != fastjson.TypeObject {
			continue
		}
		if idx := c.Get("index"); idx == nil || idx.Type() == fastjson.TypeNumber && idx.GetFloat64() == 0 {
			return c
		}
	}
	return nil
}

// parserPool holds parsers for ParseResponse. A parser keeps memory
// proportional to the largest input it parsed, so parsers that saw more than
// maxPooledInput bytes are left to the garbage collector instead.
var parserPool sync.Pool

const maxPooledInput = 256 << 10

func getParser() *fastjson.Parser {
	if p, ok := parserPool.Get().(*fastjson.Parser); ok {
		return p
	}
	return new(fastjson.Parser)
}

func putParser(p *fastjson.Parser, parsed int) {
	if parsed <= maxPooledInput {
		parserPool.Put(p)
	}
}

// ParseResponse reads a non-streaming answer of ep: the response text (at
// most maxText bytes, see Result), finish reason and usage.
//
//   - ChatCompletions: choices[0].message.content, a string, or an array of
//     parts whose "text" members are concatenated; choices[0].finish_reason;
//     usage prompt_tokens, completion_tokens, total_tokens.
//   - Completions: choices[0].text and finish_reason; usage as for chat.
//   - Embeddings: no text; usage prompt_tokens and total_tokens. Only the
//     top-level "usage" member is parsed, so a large vector list costs one
//     allocation-free scan.
//   - Responses: output[*].content[*].text of the parts of type
//     "output_text", concatenated; "status" as FinishReason; usage
//     input_tokens, output_tokens, total_tokens.
//
// "choices[0]" means the choice whose index is 0. It never fails: for an
// error body or garbage it returns what it could read, with Usage.Source
// UsageNone when there are no counts. It uses a pooled fastjson parser, does
// not retain body, and is safe for concurrent use.
func ParseResponse(ep Endpoint, body []byte, maxText int) Result {
	var (
		res  Result
		text = textAcc{max: max(maxText, 0), borrow: true}
	)
	res.Usage.Source = UsageNone
	if ep == Embeddings {
		if u, ok := embeddingsUsage(body); ok {
			res.Usage = u
		}
		return res
	}
	if !ep.valid() {
		return res
	}

	p := getParser()
	defer putParser(p, len(body))
	v, err := p.ParseBytes(body)
	if err != nil || v.Type() != fastjson.TypeObject {
		return res
	}
	switch ep {
	case ChatCompletions, Completions:
		if c := firstChoice(v.Get("choices")); c != nil {
			if ep == ChatCompletions {
				addContent(&text, c.Get("message", "content"))
			} else if s, ok := stringBytes(c.Get("text")); ok {
				text.add(s)
			}
			if fr, ok := stringBytes(c.Get("finish_reason")); ok && len(fr) > 0 {
				res.FinishReason = finishReason(fr)
			}
		}
		if u, ok := usageFrom(v.Get("usage"), "prompt_tokens", "completion_tokens"); ok {
			res.Usage = u
		}
	case Responses:
		for _, item := range v.GetArray("output") {
			for _, part := range item.GetArray("content") {
				if string(part.GetStringBytes("type")) != "output_text" {
					continue
				}
				if s, ok := stringBytes(part.Get("text")); ok {
					text.add(s)
				}
			}
		}
		if st, ok := stringBytes(v.Get("status")); ok && len(st) > 0 {
			res.FinishReason = finishReason(st)
		}
		if u, ok := usageFrom(v.Get("usage"), "input_tokens", "output_tokens"); ok {
			res.Usage = u
		}
	}
	res.Text, res.Truncated, res.TextBytes = text.String(), text.truncated, text.total
	return res
}

// addContent adds a chat message's content: a string, or an array of parts
// whose "text" strings are concatenated (parts of type "text", or untyped).
func addContent(text *textAcc, content *fastjson.Value) {
	if s, ok := stringBytes(content); ok {
		text.add(s)
		return
	}
	if content == nil || content.Type() != fastjson.TypeArray {
		return
	}
	arr, _ := content.Array()
	for _, part := range arr {
		if t := part.GetStringBytes("type"); len(t) > 0 && string(t) != "text" {
			continue
		}
		if s, ok := stringBytes(part.Get("text")); ok {
			text.add(s)
		}
	}
}

// embeddingsUsage reads the top-level "usage" member of an embeddings
// response with the allocation-free scanner, skipping the vectors.
func embeddingsUsage(body []byte) (Usage, bool) {
	open := skipWS(body, 0)
	if open == len(body) || body[open] != '{' {
		return Usage{}, false
	}
	it := newObjIter(body, open, 1)
	for {
		k, v, ok := it.next()
		if !ok {
			return Usage{}, false
		}
		if string(keyName(k)) != "usage" {
			continue
		}
		return scanUsage(v, "prompt_tokens", "completion_tokens")
	}
}
