package mock

import (
	"encoding/json"
	"strings"
	"testing"
)

// /v1/messages answers in Anthropic's shapes: the message, the event
// sequence of a stream, errors; the system prompt's tokens as cache reads.
func TestMessages(t *testing.T) {
	ts := newTestServer(t, Options{})
	body := `{"model":"claude-x","max_tokens":50,"system":"abcdefgh","messages":[{"role":"user","content":[{"type":"text","text":"abcd"}]}]}`
	var m struct {
		Type       string `json:"type"`
		Model      string `json:"model"`
		StopReason string `json:"stop_reason"`
		Content    []struct{ Type, Text string }
		Usage      struct {
			Input     int `json:"input_tokens"`
			Output    int `json:"output_tokens"`
			CacheRead int `json:"cache_read_input_tokens"`
		} `json:"usage"`
	}
	r := ts.post("/v1/messages", body, 200)
	if err := json.Unmarshal([]byte(r.body), &m); err != nil {
		t.Fatal(err)
	}
	if m.Type != "message" || m.Model != "claude-x" || m.StopReason != "end_turn" || len(m.Content) != 1 || m.Content[0].Text == "" ||
		m.Usage.Input == 0 || m.Usage.Output == 0 || m.Usage.CacheRead != 2 {
		t.Errorf("%+v", m)
	}

	s := ts.post("/v1/messages", strings.Replace(body, `"max_tokens":50`, `"max_tokens":50,"stream":true`, 1), 200)
	var order []string
	for _, line := range strings.Split(s.body, "\n") {
		if name, ok := strings.CutPrefix(line, "event: "); ok && (len(order) == 0 || order[len(order)-1] != name) {
			order = append(order, name)
		}
	}
	if got := strings.Join(order, ","); got != "message_start,content_block_start,content_block_delta,content_block_stop,message_delta,message_stop" {
		t.Errorf("events %s", got)
	}

	e := ts.post("/v1/messages", `{"model":"claude-x","messages":[]}`, 400)
	if !strings.Contains(e.body, `"type":"error"`) || !strings.Contains(e.body, `"invalid_request_error"`) {
		t.Errorf("error %s", e.body)
	}
}

// A request with tools is answered with a call of its first tool (its
// input whole, or in input_json_delta pieces when streamed); once the last
// message carries the tool's result, with text.
func TestMessagesToolUse(t *testing.T) {
	ts := newTestServer(t, Options{})
	body := `{"model":"claude-x","max_tokens":50,"tools":[{"name":"get_weather","input_schema":{"type":"object"}}],"messages":[{"role":"user","content":"weather?"}]}`
	r := ts.post("/v1/messages", body, 200)
	if !strings.Contains(r.body, `"stop_reason":"tool_use"`) || !strings.Contains(r.body, `{"type":"tool_use","id":"toolu_mock`) ||
		!strings.Contains(r.body, `"name":"get_weather","input":{"query":"mock"}}`) {
		t.Errorf("answer %s", r.body)
	}
	s := ts.post("/v1/messages", strings.Replace(body, `"max_tokens":50`, `"max_tokens":50,"stream":true`, 1), 200)
	var input strings.Builder
	for _, line := range strings.Split(s.body, "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		var ev struct {
			Delta struct {
				PartialJSON string `json:"partial_json"`
			} `json:"delta"`
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatal(err)
		}
		input.WriteString(ev.Delta.PartialJSON)
	}
	if input.String() != mockToolInput || !strings.Contains(s.body, `"stop_reason":"tool_use"`) {
		t.Errorf("stream %s", s.body)
	}
	done := strings.Replace(body, `"content":"weather?"}`, `"content":"weather?"},{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"get_weather","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"12C"}]}`, 1)
	if r := ts.post("/v1/messages", done, 200); !strings.Contains(r.body, `"stop_reason":"end_turn"`) {
		t.Errorf("after the result %s", r.body)
	}
}
