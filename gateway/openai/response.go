package openai

import (
	"strconv"
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
	CompletionTokens int // output tokens (Responses API output_tokens); always 0 for embeddings
	// TotalTokens is PromptTokens+CompletionTokens, whatever upstream
	// claims: it is what the gateway records and charges. (Reasoning,
	// cached and audio tokens are counted inside those two, per OpenAI's
	// schema.)
	TotalTokens int
	// Discrepant reports that upstream's total_tokens was not TotalTokens;
	// ReportedTotal is that claim, kept only to flag it.
	Discrepant    bool
	ReportedTotal int
	// CacheCreationTokens and CacheReadTokens are the prompt tokens
	// written to and read from the provider's prompt cache, counted inside
	// PromptTokens too: Anthropic's cache_creation_input_tokens and
	// cache_read_input_tokens; OpenAI's usage.prompt_tokens_details.
	// cached_tokens (input_tokens_details for the Responses API) is
	// CacheReadTokens, at most PromptTokens (OpenAI reports no writes).
	CacheCreationTokens, CacheReadTokens int
	Source                               UsageSource
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
	// "" if not seen. At most 64 bytes.
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

// usageAt reads the value at it.i as a usage object in place, moving it past
// the value; usage is true if the value is an object (even one without
// counts).
func usageAt(it *objIter, in, out string) (u Usage, ok, usage bool) {
	o, isObj := it.object()
	if !isObj {
		it.value()
		return Usage{}, false, false
	}
	u, ok = readUsage(&o, in, out)
	it.resume(o.i, o.err)
	return u, ok, true
}

// readUsage reads the usage object it iterates, to its end; in and out name
// its input and output counts (out "" for embeddings, which have none). ok
// is false unless it holds an input or output count (see parseCount): a
// total alone adds up to nothing. TotalTokens is the sum of the counts; a
// total_tokens that differs is flagged (Discrepant). The cached_tokens of
// in's details object (prompt_tokens_details, input_tokens_details) is
// CacheReadTokens. The first of repeated members counts.
func readUsage(it *objIter, in, out string) (u Usage, ok bool) {
	var okP, okC, okT, sawP, sawC, sawT, sawD bool
	var total int
	for {
		k, more := it.key()
		if !more {
			break
		}
		if name := it.name(k); len(name) == len(in)+8 && string(name[:len(in)]) == in && string(name[len(in):]) == "_details" {
			if o, isObj := it.object(); isObj {
				cached := readCached(&o)
				it.resume(o.i, o.err)
				if !sawD {
					sawD, u.CacheReadTokens = true, cached
				}
				continue
			}
		}
		v, _ := it.value()
		switch name := string(it.name(k)); {
		case name == in:
			if !sawP {
				sawP = true
				u.PromptTokens, okP = parseCount(v)
			}
		case name == out && out != "":
			if !sawC {
				sawC = true
				u.CompletionTokens, okC = parseCount(v)
			}
		case name == "total_tokens":
			if !sawT {
				sawT = true
				total, okT = parseCount(v)
			}
		}
	}
	if it.err != nil || !okP && !okC {
		return Usage{}, false
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	u.CacheReadTokens = min(u.CacheReadTokens, u.PromptTokens)
	if okT && total != u.TotalTokens {
		u.Discrepant, u.ReportedTotal = true, total
	}
	u.Source = UsageUpstream
	return u, true
}

// readCached reads a usage details object it iterates, to its end: its
// cached_tokens (the first one; 0 if absent or not a count).
func readCached(it *objIter) (cached int) {
	saw := false
	for {
		k, more := it.key()
		if !more {
			return cached
		}
		v, _ := it.value()
		if !saw && string(it.name(k)) == "cached_tokens" {
			saw = true
			cached, _ = parseCount(v)
		}
	}
}

// maxCount bounds a token count: larger numbers are not counts.
const maxCount = 1 << 53

// parseCount reads a token count from a raw JSON value: it must be a number
// of at most maxCount; a negative one counts 0, a fractional one is
// truncated. A member that is present but not a count is treated as absent.
func parseCount(raw []byte) (int, bool) {
	if len(raw) == 0 || raw[0] != '-' && (raw[0] < '0' || raw[0] > '9') {
		return 0, false
	}
	n := 0
	for i, c := range raw {
		if c < '0' || c > '9' || i >= 15 {
			f, err := strconv.ParseFloat(string(raw), 64)
			if err != nil && f == 0 || f != f || f > maxCount {
				return 0, false
			}
			return int(max(f, 0)), true
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

// unquoted returns the decoded form of the JSON string raw (with quotes),
// or false if raw is not a string.
func unquoted(raw []byte) ([]byte, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return nil, false
	}
	s, _ := unquote(raw[1 : len(raw)-1])
	return s, true
}

// choicesScan is what scanChoices found in a chat or completions object.
type choicesScan struct {
	usage    Usage  // counts of "usage", if usageOK
	usageOK  bool   // "usage" held counts
	usageObj bool   // "usage" is an object
	content  []byte // raw content of choice 0
	finish   []byte // raw finish_reason of choice 0
	found    bool   // choice 0 was seen
	n        int    // elements of "choices"; -1 if it is absent or not an array
}

// scanChoices reads the chat or completions object at b[open] (a stream
// chunk or a whole answer) in one pass, descending only into "choices" and
// into the first element whose "index" is absent or a number equal to 0
// ("choice 0"). inner names the member of choice 0 that holds the chat
// message ("delta" in chunks, "message" in answers), whose "content" is the
// content; with inner "" the content is choice 0's "text" (completions).
// The first of repeated members counts, as with fastjson's Get. ok is false
// if the structure it walks is broken or anything but whitespace follows
// the object.
func scanChoices(b []byte, open int, inner string) (s choicesScan, ok bool) {
	s.n = -1
	var sawChoices, sawUsage bool
	it := newObjIter(b, open, 1)
	for {
		k, more := it.key()
		if !more {
			break
		}
		switch string(it.name(k)) {
		case "choices":
			if sawChoices {
				break
			}
			sawChoices = true
			arr, isArr := it.array()
			if !isArr {
				break
			}
			s.n = 0
			for arr.elem() {
				s.n++
				c, isObj := arr.object()
				if !isObj || s.found {
					arr.value()
					continue
				}
				s.content, s.finish, s.found = scanChoice(&c, inner)
				arr.resume(c.i, c.err)
			}
			it.resume(arr.i, arr.err)
			continue
		case "usage":
			if !sawUsage {
				sawUsage = true
				s.usage, s.usageOK, s.usageObj = usageAt(&it, "prompt_tokens", "completion_tokens")
				continue
			}
		}
		it.value()
	}
	if it.err != nil || skipWS(b, it.i) != len(b) {
		return choicesScan{}, false
	}
	return s, true
}

// scanChoice reads one element of "choices" to its end (the caller resumes
// after it and takes its error): its content and finish_reason, and whether
// it is choice 0.
func scanChoice(c *objIter, inner string) (content, finish []byte, zero bool) {
	index := []byte("0")
	var sawIndex, sawInner, sawText, sawFinish bool
	for {
		k, more := c.key()
		if !more {
			break
		}
		name := c.name(k)
		switch {
		case string(name) == "index" && !sawIndex:
			sawIndex = true
			index, _ = c.value()
			continue
		case string(name) == "finish_reason" && !sawFinish:
			sawFinish = true
			finish, _ = c.value()
			continue
		case inner == "" && string(name) == "text" && !sawText:
			sawText = true
			content, _ = c.value()
			continue
		case inner != "" && string(name) == inner && !sawInner:
			sawInner = true
			m, isObj := c.object()
			if !isObj {
				break
			}
			var sawContent bool
			for {
				k, more := m.key()
				if !more {
					break
				}
				v, _ := m.value()
				if !sawContent && string(m.name(k)) == "content" {
					sawContent, content = true, v
				}
			}
			c.resume(m.i, m.err)
			continue
		}
		c.value()
	}
	return content, finish, isZeroNumber(index)
}

// scanResponse reads the Responses API response object that it iterates
// (a whole answer, or the "response" of a terminal stream event): "status"
// as res.FinishReason, the usage into res.Usage, and, when text is not nil,
// the "text" of every output[*].content[*] part of type "output_text".
func scanResponse(it *objIter, res *Result, text *textAcc) {
	var sawStatus, sawUsage, sawOutput bool
	for {
		k, more := it.key()
		if !more {
			return
		}
		switch string(it.name(k)) {
		case "status":
			if !sawStatus {
				sawStatus = true
				v, _ := it.value()
				if st, ok := unquoted(v); ok && len(st) > 0 {
					res.FinishReason = finishReason(st)
				}
				continue
			}
		case "usage":
			if !sawUsage {
				sawUsage = true
				if u, ok, _ := usageAt(it, "input_tokens", "output_tokens"); ok {
					res.Usage = u
				}
				continue
			}
		case "output":
			if sawOutput || text == nil {
				break
			}
			sawOutput = true
			if out, ok := it.array(); ok {
				for out.elem() {
					if item, ok := out.object(); ok {
						scanOutputItem(&item, text)
						out.resume(item.i, item.err)
					} else {
						out.value()
					}
				}
				it.resume(out.i, out.err)
				continue
			}
		}
		it.value()
	}
}

// scanOutputItem adds the output_text parts of one Responses API output
// item (its first "content" array) to text.
func scanOutputItem(item *objIter, text *textAcc) {
	var sawContent bool
	for {
		k, more := item.key()
		if !more {
			return
		}
		if sawContent || string(item.name(k)) != "content" {
			item.value()
			continue
		}
		sawContent = true
		parts, ok := item.array()
		if !ok {
			item.value()
			continue
		}
		for parts.elem() {
			v, _ := parts.value()
			if typ, txt := partTypeText(v); string(typ) == "output_text" {
				text.addJSON(txt)
			}
		}
		item.resume(parts.i, parts.err)
	}
}

// partTypeText returns the decoded "type" (nil if absent or not a string)
// and the raw "text" of a content part; both nil if the part is not an
// object.
func partTypeText(part []byte) (typ, txt []byte) {
	if len(part) == 0 || part[0] != '{' {
		return nil, nil
	}
	var sawType, sawText bool
	it := newObjIter(part, 0, 1)
	for {
		k, v, ok := it.next()
		if !ok {
			break
		}
		switch string(it.name(k)) {
		case "type":
			if !sawType {
				sawType = true
				typ, _ = unquoted(v)
			}
		case "text":
			if !sawText {
				sawText, txt = true, v
			}
		}
	}
	return typ, txt
}

// addContent adds a chat message's raw content: a string, or an array of
// parts whose "text" strings are concatenated (parts of type "text", or
// without a string type).
func addContent(text *textAcc, content []byte) {
	if len(content) == 0 {
		return
	}
	if content[0] == '"' {
		text.addJSON(content)
		return
	}
	if content[0] != '[' {
		return
	}
	it := newArrIter(content, 0, 1)
	for {
		part, ok := it.next()
		if !ok {
			return
		}
		if len(part) == 0 || part[0] != '{' {
			continue
		}
		if typ, txt := partTypeText(part); len(typ) == 0 || string(typ) == "text" {
			text.addJSON(txt)
		}
	}
}

// ParseResponse reads a non-streaming answer of ep: the response text (at
// most maxText bytes, see Result), finish reason and usage.
//
//   - ChatCompletions: choices[0].message.content, a string, or an array of
//     parts whose "text" members are concatenated; choices[0].finish_reason;
//     usage prompt_tokens, completion_tokens, total_tokens.
//   - Completions: choices[0].text and finish_reason; usage as for chat.
//   - Embeddings: no text; usage prompt_tokens (a completion_tokens is
//     ignored: embeddings generate none).
//   - Responses: output[*].content[*].text of the parts of type
//     "output_text", concatenated; "status" as FinishReason; usage
//     input_tokens, output_tokens, total_tokens.
//
// Usage.TotalTokens is always the sum of the input and output counts; a
// total_tokens that differs only sets Usage.Discrepant.
//
// "choices[0]" is the first choice whose index is absent or 0. It reads the
// body in one pass without building a tree, descending only into what it
// needs (an embeddings vector list is skipped at memory speed), and never
// fails: for an error body, or a body whose structure breaks where it reads,
// it returns an empty Result with Usage.Source UsageNone. It allocates the
// text once, does not retain body, and is safe for concurrent use.
func ParseResponse(ep Endpoint, body []byte, maxText int) Result {
	none := Result{Usage: Usage{Source: UsageNone}}
	open := skipWS(body, 0)
	if !ep.valid() || open == len(body) || body[open] != '{' {
		return none
	}
	res := none
	text := textAcc{max: max(maxText, 0), borrow: true}
	defer text.release()
	switch ep {
	case ChatCompletions, Completions:
		inner := "message"
		if ep == Completions {
			inner = ""
		}
		s, ok := scanChoices(body, open, inner)
		if !ok {
			return none
		}
		if s.found {
			if ep == ChatCompletions {
				addContent(&text, s.content)
			} else {
				text.addJSON(s.content)
			}
			if fr, ok := unquoted(s.finish); ok && len(fr) > 0 {
				res.FinishReason = finishReason(fr)
			}
		}
		if s.usageOK {
			res.Usage = s.usage
		}
	case Embeddings:
		it := newObjIter(body, open, 1)
		var sawUsage bool
		for {
			k, ok := it.key()
			if !ok {
				break
			}
			if sawUsage || string(it.name(k)) != "usage" {
				it.value()
				continue
			}
			sawUsage = true
			if u, ok, _ := usageAt(&it, "prompt_tokens", ""); ok {
				res.Usage = u
			}
		}
		if it.err != nil || skipWS(body, it.i) != len(body) {
			return none
		}
	case Responses:
		it := newObjIter(body, open, 1)
		scanResponse(&it, &res, &text)
		if it.err != nil || skipWS(body, it.i) != len(body) {
			return none
		}
	case Messages:
		it := newObjIter(body, open, 1)
		var u anthropicUsage
		scanMessage(&it, &res, &text, &u)
		if it.err != nil || skipWS(body, it.i) != len(body) {
			return none
		}
		res.Usage = u.usage()
	}
	res.Text, res.Truncated, res.TextBytes = text.String(), text.truncated, text.total
	return res
}
