package openai

// Anthropic's Messages API (POST /v1/messages), which the gateway serves
// for models routed to Anthropic upstreams. It shares the parsing above:
// "model", "stream", "max_tokens" and "messages" as for chat, "system" as
// the Responses API's instructions (recorded with the messages as
// {"system":…,"messages":…}). Its usage counts input_tokens (the prompt
// beyond any cache), cache_creation_input_tokens and
// cache_read_input_tokens separately: the prompt tokens recorded and
// charged are their sum, the output tokens output_tokens.

// openAIOnly are request members of OpenAI's chat API that Anthropic's
// Messages API does not have: sent to /v1/messages they are a mistake the
// caller should hear about (a 400 naming the member), not something the
// upstream may silently ignore or refuse less clearly.
var openAIOnly = map[string]bool{
	"stream_options": true, "max_completion_tokens": true, "n": true, "response_format": true,
	"frequency_penalty": true, "presence_penalty": true, "logprobs": true, "top_logprobs": true,
	"logit_bias": true, "functions": true, "function_call": true, "user": true, "seed": true,
	"parallel_tool_calls": true, "input": true, "prompt": true, "instructions": true,
}

// anthropicOnly refuses a member of a Messages request that only OpenAI's
// APIs have.
func anthropicOnly(name []byte) error {
	if openAIOnly[string(name)] {
		return &RequestError{Param: string(name), Msg: "'" + string(name) + "' is an OpenAI parameter, not one of Anthropic's Messages API"}
	}
	return nil
}

// Anthropic stream event types the tee learns from.
const (
	evMessageStart = "message_start"
	evBlockDelta   = "content_block_delta"
	evMessageDelta = "message_delta"
	evMessageStop  = "message_stop"
)

// anthropicUsage accumulates a Messages usage object: the counts seen so
// far (message_delta's are cumulative and replace message_start's).
type anthropicUsage struct {
	input, output, cacheCreation, cacheRead int
	seen                                    bool
}

// read reads the usage object it iterates, to its end; members absent
// keep their value.
func (u *anthropicUsage) read(it *objIter) {
	for {
		k, more := it.key()
		if !more {
			break
		}
		v, _ := it.value()
		var dst *int
		switch string(it.name(k)) {
		case "input_tokens":
			dst = &u.input
		case "output_tokens":
			dst = &u.output
		case "cache_creation_input_tokens":
			dst = &u.cacheCreation
		case "cache_read_input_tokens":
			dst = &u.cacheRead
		default:
			continue
		}
		if n, ok := parseCount(v); ok {
			*dst, u.seen = n, true
		}
	}
}

// usage is the Usage the gateway records.
func (u *anthropicUsage) usage() Usage {
	if !u.seen {
		return Usage{Source: UsageNone}
	}
	p := u.input + u.cacheCreation + u.cacheRead
	return Usage{PromptTokens: p, CompletionTokens: u.output, TotalTokens: p + u.output,
		CacheCreationTokens: u.cacheCreation, CacheReadTokens: u.cacheRead, Source: UsageUpstream}
}

// scanMessage reads a Messages response object that it iterates: the text
// of its text blocks, its stop_reason and usage.
func scanMessage(it *objIter, res *Result, text *textAcc, u *anthropicUsage) {
	for {
		k, more := it.key()
		if !more {
			break
		}
		switch string(it.name(k)) {
		case "content":
			arr, ok := it.array()
			if !ok {
				it.value()
				continue
			}
			for arr.elem() {
				v, _ := arr.value()
				if typ, txt := partTypeText(v); string(typ) == "text" && text != nil && len(txt) > 0 && txt[0] == '"' {
					text.addJSON(txt)
				}
			}
			it.resume(arr.i, arr.err)
		case "stop_reason":
			v, _ := it.value()
			if r, ok := unquoted(v); ok && len(r) > 0 {
				res.FinishReason = finishReason(r)
			}
		case "usage":
			if o, ok := it.object(); ok {
				u.read(&o)
				it.resume(o.i, o.err)
			} else {
				it.value()
			}
		default:
			it.value()
		}
	}
}

// learnMessages learns from an Anthropic stream event: text deltas, usage
// from message_start and message_delta, the end at message_stop.
func (t *StreamTee) learnMessages(event, data []byte) {
	switch string(event) {
	case "", evMessageStart, evBlockDelta, evMessageDelta, evMessageStop:
	default:
		return
	}
	open := skipWS(data, 0)
	if open == len(data) || data[open] != '{' {
		t.stats.Malformed++
		return
	}
	var typ, stop []byte
	res := Result{}
	it := newObjIter(data, open, 1)
	for {
		k, more := it.key()
		if !more {
			break
		}
		switch string(it.name(k)) {
		case "type":
			typ, _ = it.value()
		case "message": // message_start
			if o, ok := it.object(); ok {
				scanMessage(&o, &res, nil, &t.anth)
				it.resume(o.i, o.err)
			} else {
				it.value()
			}
		case "usage": // message_delta
			if o, ok := it.object(); ok {
				t.anth.read(&o)
				it.resume(o.i, o.err)
			} else {
				it.value()
			}
		case "delta":
			o, ok := it.object()
			if !ok {
				it.value()
				continue
			}
			for {
				dk, more := o.key()
				if !more {
					break
				}
				v, _ := o.value()
				switch string(o.name(dk)) {
				case "text":
					if v[0] == '"' {
						t.addText(v)
					}
				case "stop_reason":
					stop = v
				}
			}
			it.resume(o.i, o.err)
		default:
			it.value()
		}
	}
	if it.err != nil || skipWS(data, it.i) != len(data) {
		t.stats.Malformed++
		return
	}
	if r, ok := unquoted(stop); ok && len(r) > 0 {
		t.fin = finishReason(r)
	}
	t.usage = t.anth.usage()
	name, ok := unquoted(typ)
	if !ok {
		name = event
	}
	if string(name) == evMessageStop {
		t.ended = true
	}
}
