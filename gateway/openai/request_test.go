package openai

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/valyala/fastjson"
)

func TestParseRequest(t *testing.T) {
	const messages = `[ {"role":"system","content":"Be brief."},
		{"role":"user","content":"caf\u00e9 \"x\" 🙂"} ]`
	tests := []struct {
		name string
		ep   Endpoint
		body string
		want Request
	}{
		{"chat", ChatCompletions, `{"model":"gpt-4o","messages":` + messages + `}`,
			Request{Model: "gpt-4o", Prompt: messages}},
		{"chat stream with usage, leading whitespace", ChatCompletions,
			"\r\n\t {\"stream\":true,\"stream_options\":{\"include_usage\":true},\"model\":\"gpt-4o\",\"messages\":[]}",
			Request{Model: "gpt-4o", Stream: true, IncludeUsage: true, Prompt: "[]"}},
		{"chat stream_options without include_usage, stream null", ChatCompletions,
			`{"model":"m","stream":null,"stream_options":{"include_obfuscation":false},"messages":[{}]}`,
			Request{Model: "m", Prompt: "[{}]"}},
		{"escaped model name and key", ChatCompletions, `{"mod\u0065l":"gpt\u002d4o","messages":[]}`,
			Request{Model: "gpt-4o", Prompt: "[]"}},
		{"unknown members ignored", ChatCompletions, `{"model":"m","messages":[],"prompt":7,"input":{},"tools":[{"a":[1,2,{"b":null}]}]}`,
			Request{Model: "m", Prompt: "[]"}},
		{"completions string prompt", Completions, `{"model":"davinci-002","prompt":"Say \"hi\"","stream":true}`,
			Request{Model: "davinci-002", Stream: true, Prompt: `"Say \"hi\""`}},
		{"completions array prompt", Completions, `{"model":"m","prompt":["a", "b"]}`,
			Request{Model: "m", Prompt: `["a", "b"]`}},
		{"completions without prompt", Completions, `{"model":"m","prompt":null}`,
			Request{Model: "m"}},
		{"embeddings ignore stream", Embeddings, `{"model":"text-embedding-3-small","input":["x","y"],"stream":"not read"}`,
			Request{Model: "text-embedding-3-small", Prompt: `["x","y"]`}},
		{"responses input only", Responses, `{"model":"gpt-4.1","input":"Hello","stream":true}`,
			Request{Model: "gpt-4.1", Stream: true, Prompt: `"Hello"`}},
		{"responses with instructions", Responses, `{"model":"gpt-4.1","instructions":"Be brief.","input":[{"role":"user","content":"Hi"}]}`,
			Request{Model: "gpt-4.1", Prompt: `{"instructions":"Be brief.","input":[{"role":"user","content":"Hi"}]}`}},
		{"responses instructions only", Responses, `{"model":"gpt-4.1","instructions":"x","previous_response_id":"resp_1"}`,
			Request{Model: "gpt-4.1", Prompt: `{"instructions":"x"}`}},
		{"names near the interpreted ones pass", ChatCompletions,
			`{"model":"m","messages":[],"models":1,"mode":1,"Temperature":1,"streaming":1,"STREAM_OPTION":1,"\u017f":1,"\u212a":1,"max_token":1,"Max_Tokens_":1,"NN":1,"stream_options":{"Include":1,"include_usage_":1}}`,
			Request{Model: "m", Prompt: "[]"}},
		{"exact names another endpoint reads pass", Completions, `{"model":"m","messages":[],"input":1,"instructions":2}`,
			Request{Model: "m"}},
		{"model of 256 bytes", Embeddings, `{"model":"` + strings.Repeat("é", 128) + `"}`,
			Request{Model: strings.Repeat("é", 128)}},
		{"chat max_tokens", ChatCompletions, `{"model":"m","messages":[],"max_tokens":64}`,
			Request{Model: "m", Prompt: "[]", MaxOutputTokens: 64}},
		{"chat the larger of max_tokens and max_completion_tokens", ChatCompletions,
			`{"model":"m","max_completion_tokens":500,"messages":[],"max_tokens":64}`,
			Request{Model: "m", Prompt: "[]", MaxOutputTokens: 500}},
		{"completions max_tokens as a fraction", Completions, `{"model":"m","max_tokens":99.5}`,
			Request{Model: "m", MaxOutputTokens: 100}},
		{"responses max_output_tokens with an exponent", Responses, `{"model":"m","max_output_tokens":1e3}`,
			Request{Model: "m", MaxOutputTokens: 1000}},
		{"max_tokens beyond the cap", ChatCompletions, `{"model":"m","messages":[],"max_tokens":1e300}`,
			Request{Model: "m", Prompt: "[]", MaxOutputTokens: MaxOutputTokensCap}},
		{"max_tokens null, negative or not a number count as absent", ChatCompletions,
			`{"model":"m","messages":[],"max_tokens":"64","max_completion_tokens":-1}`,
			Request{Model: "m", Prompt: "[]"}},
		{"max_tokens not read for embeddings, max_output_tokens not for chat", Embeddings,
			`{"model":"m","max_tokens":7,"max_output_tokens":8}`, Request{Model: "m"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRequest(tc.ep, []byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
			if got.Prompt != "" && fastjson.Validate(got.Prompt) != nil {
				t.Fatalf("Prompt %q is not JSON", got.Prompt)
			}
		})
	}
}

func TestParseRequestErrors(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	manyMessages := func(n int) string {
		return `{"model":"m","messages":[` + strings.Repeat(`{},`, n-1) + `{}]}`
	}
	tests := []struct {
		name  string
		ep    Endpoint
		body  string
		param string
		msg   string // substring of Msg
	}{
		{"empty body", ChatCompletions, "", "", "not valid JSON"},
		{"whitespace body", ChatCompletions, " \n", "", "not valid JSON"},
		{"garbage", ChatCompletions, "model=gpt-4o", "", "not valid JSON"},
		{"truncated", ChatCompletions, `{"model":"m","messages":[`, "", "not valid JSON"},
		{"trailing garbage", ChatCompletions, `{"model":"m","messages":[]} x`, "", "not valid JSON"},
		{"invalid escape", ChatCompletions, `{"model":"m\q","messages":[]}`, "", "not valid JSON"},
		{"mismatched brackets", ChatCompletions, `{"model":"m","messages":[}]}`, "", "not valid JSON"},
		{"raw control character in string", ChatCompletions, "{\"model\":\"m\x01\",\"messages\":[]}", "", "not valid JSON"},
		{"invalid UTF-8", ChatCompletions, "{\"model\":\"m\",\"messages\":[\"\xff\"]}", "", "not valid UTF-8"},
		{"array", ChatCompletions, `[{"model":"m"}]`, "", "must be a JSON object"},
		{"string", ChatCompletions, `"x"`, "", "must be a JSON object"},
		{"model missing", ChatCompletions, `{"messages":[]}`, "model", "provide a model"},
		{"model null", ChatCompletions, `{"model":null,"messages":[]}`, "model", "provide a model"},
		{"model number", ChatCompletions, `{"model":4,"messages":[]}`, "model", "must be a string"},
		{"model empty", ChatCompletions, `{"model":"","messages":[]}`, "model", "must not be empty"},
		{"model 257 bytes", ChatCompletions, `{"model":"` + strings.Repeat("a", 257) + `","messages":[]}`, "model", "longer than 256"},
		{"model escaped control", ChatCompletions, `{"model":"gpt\u0007","messages":[]}`, "model", "control"},
		{"model escaped NUL", ChatCompletions, `{"model":"gpt\u0000","messages":[]}`, "model", "control"},
		{"model DEL", ChatCompletions, "{\"model\":\"gpt\x7f\",\"messages\":[]}", "model", "control"},
		{"model C1 control", ChatCompletions, `{"model":"gpt\u0085","messages":[]}`, "model", "control"},
		{"model lone surrogate", ChatCompletions, `{"model":"gpt\ud800","messages":[]}`, "model", "control"},
		{"model given twice", ChatCompletions, `{"model":"cheap","messages":[],"model":"expensive"}`, "model", "more than once"},
		{"model given twice, once escaped", ChatCompletions, `{"model":"cheap","messages":[],"m\u006fdel":"expensive"}`, "model", "more than once"},
		{"stream string", ChatCompletions, `{"model":"m","messages":[],"stream":"true"}`, "stream", "boolean"},
		{"stream number", Responses, `{"model":"m","stream":1}`, "stream", "boolean"},
		{"MODEL beside model", ChatCompletions, `{"model":"cheap","messages":[],"MODEL":"expensive"}`, "MODEL", "case-sensitive (did you mean 'model'?)"},
		{"lone Model", ChatCompletions, `{"Model":"expensive","messages":[]}`, "Model", "did you mean 'model'"},
		{"escaped MODEL", Embeddings, `{"model":"m","M\u004fDEL":"x"}`, "MODEL", "did you mean 'model'"},
		{"Stream beside stream", ChatCompletions, `{"model":"m","messages":[],"stream":false,"Stream":true}`, "Stream", "did you mean 'stream'"},
		{"long s in stream", Responses, `{"model":"m","\u017ftream":true}`, "\u017ftream", "did you mean 'stream'"},
		{"Stream on embeddings", Embeddings, `{"model":"m","input":"x","Stream":true}`, "Stream", "did you mean 'stream'"},
		{"Messages beside messages", ChatCompletions, `{"model":"m","messages":[{"role":"user","content":"hello"}],"Messages":[{"role":"user","content":"long"}]}`, "Messages", "did you mean 'messages'"},
		{"Kelvin sign in max_tokens", ChatCompletions, `{"model":"m","messages":[],"max_to\u212aens":1}`, "max_to\u212aens", "did you mean 'max_tokens'"},
		{"INPUT", Embeddings, `{"model":"m","INPUT":"x"}`, "INPUT", "did you mean 'input'"},
		{"Prompt", Completions, `{"model":"m","prompt":"a","Prompt":"b"}`, "Prompt", "did you mean 'prompt'"},
		{"Instructions", Responses, `{"model":"m","Instructions":"b"}`, "Instructions", "did you mean 'instructions'"},
		{"Stream_Options", Completions, `{"model":"m","Stream_Options":{}}`, "Stream_Options", "did you mean 'stream_options'"},
		{"N", ChatCompletions, `{"model":"m","messages":[],"N":9}`, "N", "did you mean 'n'"},
		{"Include_Usage", ChatCompletions, `{"model":"m","messages":[],"stream":true,"stream_options":{"Include_Usage":false}}`, "stream_options.Include_Usage", "did you mean 'stream_options.include_usage'"},
		{"stream twice", ChatCompletions, `{"model":"m","messages":[],"stream":false,"stream":true}`, "stream", "more than once"},
		{"stream_options array", ChatCompletions, `{"model":"m","messages":[],"stream_options":[]}`, "stream_options", "object"},
		{"include_usage string", ChatCompletions, `{"model":"m","messages":[],"stream_options":{"include_usage":"yes"}}`, "stream_options.include_usage", "boolean"},
		{"include_usage twice", Completions, `{"model":"m","stream_options":{"include_usage":false,"include_usage":true}}`, "stream_options.include_usage", "more than once"},
		{"max_tokens twice", ChatCompletions, `{"model":"m","messages":[],"max_tokens":1,"max_tokens":100000}`, "max_tokens", "more than once"},
		{"max_output_tokens twice", Responses, `{"model":"m","max_output_tokens":1,"max_output_tokens":100000}`, "max_output_tokens", "more than once"},
		{"messages missing", ChatCompletions, `{"model":"m"}`, "messages", "required"},
		{"messages null", ChatCompletions, `{"model":"m","messages":null}`, "messages", "required"},
		{"messages object", ChatCompletions, `{"model":"m","messages":{"role":"user"}}`, "messages", "must be an array"},
		{"messages string", ChatCompletions, `{"model":"m","messages":"hi"}`, "messages", "must be an array"},
		{"prompt number", Completions, `{"model":"m","prompt":1}`, "prompt", "string or an array"},
		{"input object", Embeddings, `{"model":"m","input":{}}`, "input", "string or an array"},
		{"instructions array", Responses, `{"model":"m","instructions":[]}`, "instructions", "must be a string"},
		{"nesting 129 deep", ChatCompletions, `{"model":"m","messages":` + deep(128) + `}`, "", "deeper than 128"},
		{"nesting 10k deep in messages", ChatCompletions, `{"model":"m","messages":` + deep(10_000) + `}`, "", "deeper than 128"},
		{"nesting 10k deep in an unread member", ChatCompletions, `{"model":"m","messages":[],"x":` + deep(10_000) + `}`, "", "deeper than 128"},
		{"nesting 10k deep objects", ChatCompletions, `{"model":"m","messages":[],"x":` + strings.Repeat(`{"a":`, 10_000) + "1" + strings.Repeat("}", 10_000) + `}`, "", "deeper than 128"},
		{"top-level array 1M deep", ChatCompletions, deep(1_000_000), "", "deeper than 128"},
		{"unterminated 1M deep", ChatCompletions, `{"model":"m","messages":` + strings.Repeat("[", 1_000_000), "", "deeper than 128"},
		{"100,001 messages", ChatCompletions, manyMessages(MaxMessages + 1), "messages", "more than 100000"},
		{"1M messages", ChatCompletions, manyMessages(1_000_000), "messages", "more than 100000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRequest(tc.ep, []byte(tc.body))
			var re *RequestError
			if !errors.As(err, &re) {
				t.Fatalf("error %v, want a *RequestError", err)
			}
			if re.Param != tc.param || !strings.Contains(re.Msg, tc.msg) {
				t.Fatalf("RequestError{Param: %q, Msg: %q}, want param %q and a message containing %q", re.Param, re.Msg, tc.param, tc.msg)
			}
		})
	}
}

func TestParseRequestLimitsAccepted(t *testing.T) {
	// Exactly at the limits is fine.
	body := `{"model":"m","messages":[` + strings.Repeat(`{},`, MaxMessages-1) + `{}]}`
	if _, err := ParseRequest(ChatCompletions, []byte(body)); err != nil {
		t.Fatalf("%d messages: %v", MaxMessages, err)
	}
	depth := MaxNestingDepth - 1 // plus the top-level object
	body = `{"model":"m","messages":[],"x":` + strings.Repeat("[", depth) + strings.Repeat("]", depth) + `}`
	if _, err := ParseRequest(ChatCompletions, []byte(body)); err != nil {
		t.Fatalf("nesting %d deep: %v", MaxNestingDepth, err)
	}
}

func TestParseRequestUnknownEndpoint(t *testing.T) {
	_, err := ParseRequest(0, []byte(`{"model":"m"}`))
	var re *RequestError
	if err == nil || errors.As(err, &re) {
		t.Fatalf("error %v, want a plain error for a programming mistake", err)
	}
}

// TestFastjsonDepth records why ParseRequest bounds nesting itself: fastjson's
// Parser stops at fastjson.MaxDepth (300) with an error, but its Validate
// recurses once per level without any limit, so a body of a few megabytes of
// "[" would need gigabytes of stack and kill the process (a fatal error, not
// a recoverable panic). If this test fails, fastjson changed; revisit the
// guard in ParseRequest.
func TestFastjsonDepth(t *testing.T) {
	deep := strings.Repeat("[", 10_000) + strings.Repeat("]", 10_000)
	var p fastjson.Parser
	if _, err := p.Parse(deep); err == nil || !strings.Contains(err.Error(), "depth") {
		t.Fatalf("fastjson.Parser on 10k levels: %v, want a depth error", err)
	}
	if err := fastjson.Validate(deep); err != nil {
		t.Fatalf("fastjson.Validate on 10k levels: %v; it used to accept any depth", err)
	}
}

func TestEndpoint(t *testing.T) {
	for _, ep := range []Endpoint{ChatCompletions, Completions, Embeddings, Responses} {
		got, ok := EndpointForPath([]byte(ep.Path()))
		if !ok || got != ep || ep.String() != ep.Path() {
			t.Fatalf("%v: EndpointForPath(%q) = %v, %v", ep, ep.Path(), got, ok)
		}
	}
	for _, path := range []string{"", "/v1/chat/completions/", "/v1/models", "/v1/chat/completions?x=1"} {
		if ep, ok := EndpointForPath([]byte(path)); ok {
			t.Fatalf("EndpointForPath(%q) = %v, want none", path, ep)
		}
	}
	if Endpoint(0).String() != "unknown" || Endpoint(9).Path() != "" {
		t.Fatal("unknown endpoints must not have a path")
	}
	if !ChatCompletions.StreamUsageOptIn() || !Completions.StreamUsageOptIn() || Responses.StreamUsageOptIn() || Embeddings.StreamUsageOptIn() {
		t.Fatal("StreamUsageOptIn is wrong")
	}
}

func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(`{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`), uint8(0))
	f.Add([]byte(`{"model":"m","stream":true,"stream_options":{"include_usage":false,"x":1},"messages":[]}`), uint8(0))
	f.Add([]byte(` {"stream":true,"stream_options":null,"model":"m","prompt":["a"]}`), uint8(1))
	f.Add([]byte(`{"model":"m","input":"x","instructions":"be \"brief\""}`), uint8(3))
	f.Add([]byte(`[[[`), uint8(2))
	f.Fuzz(func(t *testing.T, body []byte, epb uint8) {
		ep := Endpoint(1 + epb%4)
		req, err := ParseRequest(ep, body)
		if err != nil {
			var re *RequestError
			if !errors.As(err, &re) {
				t.Fatalf("error %v is not a *RequestError", err)
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
		if req.Prompt != "" && !json.Valid([]byte(req.Prompt)) {
			t.Fatalf("Prompt %q is not JSON", req.Prompt)
		}
		checkUpstreamAgrees(t, ep, body, req)
		if !ep.StreamUsageOptIn() {
			return
		}
		out, injected, err := WithStreamUsage(body)
		if err != nil {
			t.Fatalf("WithStreamUsage on an accepted body: %v", err)
		}
		if injected == (req.IncludeUsage || !req.Stream) {
			t.Fatalf("injected %v for Stream %v IncludeUsage %v", injected, req.Stream, req.IncludeUsage)
		}
		req2, err := ParseRequest(ep, out)
		if err != nil {
			t.Fatalf("WithStreamUsage output %q refused: %v", out, err)
		}
		if req2.Stream != req.Stream || req2.Model != req.Model || req2.Prompt != req.Prompt || req2.IncludeUsage != req.Stream {
			t.Fatalf("WithStreamUsage changed the request: %+v -> %+v", req, req2)
		}
	})
}
