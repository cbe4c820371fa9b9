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
