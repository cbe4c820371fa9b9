package translate

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/bulkheadhq/bulkhead/gateway/openai"
)

var opt = Options{DefaultMaxTokens: 4096}

// A conversation with every translated part becomes the Messages body
// Anthropic documents: system apart, tool calls as tool_use, tool results
// as a user turn of tool_result blocks (merged), images as sources.
func TestRequest(t *testing.T) {
	in := `{"model":"claude-x","stream":true,"stream_options":{"include_usage":true},"temperature":0.5,"top_p":0.9,"stop":"END","user":"u1",
	"parallel_tool_calls":false,"tool_choice":"required",
	"tools":[{"type":"function","function":{"name":"f","description":"d","parameters":{"type":"object"}}},{"type":"function","function":{"name":"g"}}],
	"messages":[
	 {"role":"system","content":"be brief"},
	 {"role":"developer","content":[{"type":"text","text":"and kind"}]},
	 {"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}},{"type":"image_url","image_url":{"url":"https://example.com/a.png"}}]},
	 {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}},{"id":"c2","type":"function","function":{"name":"g","arguments":""}}]},
	 {"role":"tool","tool_call_id":"c1","content":"one"},
	 {"role":"tool","tool_call_id":"c2","content":[{"type":"text","text":"two"}]},
	 {"role":"user","content":"and?"}
	]}`
	tr, err := Request([]byte(in), opt)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"model":"claude-x","max_tokens":4096,"system":[{"type":"text","text":"be brief"},{"type":"text","text":"and kind"}],` +
		`"messages":[{"role":"user","content":[{"type":"text","text":"look"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}},{"type":"image","source":{"type":"url","url":"https://example.com/a.png"}}]},` +
		`{"role":"assistant","content":[{"type":"tool_use","id":"c1","name":"f","input":{"a":1}},{"type":"tool_use","id":"c2","name":"g","input":{}}]},` +
		`{"role":"user","content":[{"type":"tool_result","tool_use_id":"c1","content":[{"type":"text","text":"one"}]},{"type":"tool_result","tool_use_id":"c2","content":[{"type":"text","text":"two"}]},{"type":"text","text":"and?"}]}],` +
		`"temperature":0.5,"top_p":0.9,"stop_sequences":["END"],"stream":true,` +
		`"tools":[{"name":"f","description":"d","input_schema":{"type":"object"}},{"name":"g","input_schema":{"type":"object","properties":{}}}],` +
		`"tool_choice":{"type":"any","disable_parallel_tool_use":true},"metadata":{"user_id":"u1"}}`
	if string(tr.Body) != want {
		t.Errorf("body\n%s\nwant\n%s", tr.Body, want)
	}
	if !tr.Stream || !tr.IncludeUsage {
		t.Errorf("%+v", tr)
	}
	tr, err = Request([]byte(`{"model":"m","max_completion_tokens":7,"max_tokens":9,"tool_choice":{"type":"function","function":{"name":"f"}},"messages":[{"role":"user","content":"x"}]}`), opt)
	if err != nil || !strings.Contains(string(tr.Body), `"max_tokens":7`) || !strings.Contains(string(tr.Body), `"tool_choice":{"type":"tool","name":"f"}`) {
		t.Errorf("%s %v", tr.Body, err)
	}
}

// What Anthropic cannot honour is a 400 naming the member.
func TestRequestRefused(t *testing.T) {
	for body, param := range map[string]string{
		`{"model":"m","n":2,"messages":[{"role":"user","content":"x"}]}`:                                                                        "n",
		`{"model":"m","logprobs":true,"messages":[{"role":"user","content":"x"}]}`:                                                              "logprobs",
		`{"model":"m","frequency_penalty":0.5,"messages":[{"role":"user","content":"x"}]}`:                                                      "frequency_penalty",
		`{"model":"m","seed":1,"messages":[{"role":"user","content":"x"}]}`:                                                                     "seed",
		`{"model":"m","response_format":{"type":"json_object"},"messages":[{"role":"user","content":"x"}]}`:                                     "response_format",
		`{"model":"m","functions":[],"messages":[{"role":"user","content":"x"}]}`:                                                               "functions",
		`{"model":"m","temperature":1.5,"messages":[{"role":"user","content":"x"}]}`:                                                            "temperature",
		`{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]}`:                                                               "max_tokens",
		`{"model":"m","messages":[{"role":"system","content":"x"}]}`:                                                                            "messages",
		`{"model":"m","messages":[{"role":"function","content":"x"}]}`:                                                                          "messages[0].role",
		`{"model":"m","messages":[{"role":"tool","content":"x"}]}`:                                                                              "messages[0].tool_call_id",
		`{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}]}`:                                        "messages[0].content[0].type",
		`{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"file:///etc/passwd"}}]}]}`:                  "messages[0].content[0].image_url.url",
		`{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/bmp;base64,AA=="}}]}]}`:          "messages[0].content[0].image_url.url",
		`{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"[1]"}}]}]}`: "messages[0].tool_calls[0].function.arguments",
		`{"model":"m","tool_choice":"sometimes","messages":[{"role":"user","content":"x"}]}`:                                                    "tool_choice",
		`{"model":"m","stop":7,"messages":[{"role":"user","content":"x"}]}`:                                                                     "stop",
	} {
		_, err := Request([]byte(body), opt)
		var re *openai.RequestError
		if !errors.As(err, &re) || re.Param != param {
			t.Errorf("%s: err %v, want param %s", body, err, param)
		}
	}
	// Neutral values of refused members pass.
	if _, err := Request([]byte(`{"model":"m","n":1,"logprobs":false,"frequency_penalty":0,"response_format":{"type":"text"},"messages":[{"role":"user","content":"x"}]}`), opt); err != nil {
		t.Error(err)
	}
}

func TestResponse(t *testing.T) {
	in := `{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"a \"q\"\n"},{"type":"tool_use","id":"t1","name":"f","input":{"x":[1,2]}}],` +
		`"stop_reason":"tool_use","usage":{"input_tokens":3,"cache_creation_input_tokens":1,"cache_read_input_tokens":2,"output_tokens":4}}`
	out, ok := Response([]byte(in), 42)
	want := `{"id":"chatcmpl-msg_1","object":"chat.completion","created":42,"model":"claude-x","choices":[{"index":0,"message":{"role":"assistant","content":"a \"q\"\n","refusal":null,` +
		`"tool_calls":[{"id":"t1","type":"function","function":{"name":"f","arguments":"{\"x\":[1,2]}"}}]},"logprobs":null,"finish_reason":"tool_calls"}],` +
		`"usage":{"prompt_tokens":6,"completion_tokens":4,"total_tokens":10,"prompt_tokens_details":{"cached_tokens":2}}}`
	if !ok || string(out) != want {
		t.Errorf("%s\nwant\n%s", out, want)
	}
	if !json.Valid(out) {
		t.Error("invalid JSON")
	}
	for stop, fin := range map[string]string{"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls", "refusal": "content_filter"} {
		if FinishReason(stop) != fin {
			t.Errorf("%s → %s", stop, FinishReason(stop))
		}
	}
}

func TestStream(t *testing.T) {
	events := "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m1\",\"type\":\"message\",\"model\":\"claude-x\",\"content\":[],\"usage\":{\"input_tokens\":5,\"cache_read_input_tokens\":2,\"output_tokens\":1}}}\n\n" +
		"event: ping\ndata: {\"type\":\"ping\"}\n\n" +
		"event: content_block_start\r\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\r\n\r\n" +
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n" +
		"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"f\",\"input\":{}}}\n\n" +
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":9}}\n\n" +
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
	var s Stream
	s.Reset(true, 42)
	out, err := s.Events(nil, []byte(events))
	if err != nil || !s.Done() {
		t.Fatal(err, s.Done())
	}
	head := `data: {"id":"chatcmpl-m1","object":"chat.completion.chunk","created":42,"model":"claude-x","choices":[`
	want := head + `{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}` + "\n\n" +
		head + `{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}]}` + "\n\n" +
		head + `{"index":0,"delta":{"tool_calls":[{"index":0,"id":"t1","type":"function","function":{"name":"f","arguments":""}}]},"logprobs":null,"finish_reason":null}]}` + "\n\n" +
		head + `{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]},"logprobs":null,"finish_reason":null}]}` + "\n\n" +
		head + `{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}]}` + "\n\n" +
		head + `],"usage":{"prompt_tokens":7,"completion_tokens":9,"total_tokens":16,"prompt_tokens_details":{"cached_tokens":2}}}` + "\n\n" +
		"data: [DONE]\n\n"
	if string(out) != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
	s.Reset(false, 1)
	if _, err := s.Events(nil, []byte("data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\n")); !errors.Is(err, ErrMalformed) {
		t.Errorf("content before message_start: %v", err)
	}
	s.Reset(false, 1)
	var se *StreamError
	if _, err := s.Events(nil, []byte("data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n")); !errors.As(err, &se) || se.Type != "overloaded_error" {
		t.Errorf("error event: %v", err)
	}
}

func TestAppendString(t *testing.T) {
	for _, s := range []string{"", "plain", "q\"b\\", "\x00\x1f\t\r\n", "é😀", "\u2028\u2029", "bad\xffutf8"} {
		var got string
		if err := json.Unmarshal(appendString(nil, s), &got); err != nil || (got != s && !strings.Contains(s, "\xff")) {
			t.Errorf("%q → %s (%v)", s, appendString(nil, s), err)
		}
	}
}
