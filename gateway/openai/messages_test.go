package openai

import (
	"errors"
	"strings"
	"testing"
)

func TestParseRequestMessages(t *testing.T) {
	r, err := ParseRequest(Messages, []byte(`{"model":"claude-x","max_tokens":100,"system":"be terse","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil || r.Model != "claude-x" || !r.Stream || r.MaxOutputTokens != 100 ||
		r.Prompt != `{"system":"be terse","messages":[{"role":"user","content":"hi"}]}` {
		t.Fatalf("%+v %v", r, err)
	}
	if r, err := ParseRequest(Messages, []byte(`{"model":"c","messages":[]}`)); err != nil || r.Prompt != `[]` {
		t.Errorf("no system: %+v %v", r, err)
	}
	for body, param := range map[string]string{
		`{"model":"c","messages":[],"stream_options":{"include_usage":true}}`: "stream_options",
		`{"model":"c","messages":[],"n":2}`:                                   "n",
		`{"model":"c","messages":[],"max_completion_tokens":2}`:               "max_completion_tokens",
		`{"model":"c","messages":[],"system":3}`:                              "system",
		`{"model":"c"}`:                                                       "messages",
		`{"model":"c","messages":{}}`:                                         "messages",
	} {
		var re *RequestError
		if _, err := ParseRequest(Messages, []byte(body)); !errors.As(err, &re) || re.Param != param {
			t.Errorf("%s: %v, want a RequestError naming %s", body, err, param)
		}
	}
}

func TestParseResponseMessages(t *testing.T) {
	body := `{"id":"m","type":"message","role":"assistant","content":[{"type":"text","text":"Hel"},{"type":"tool_use","id":"t","name":"f","input":{}},{"type":"text","text":"lo"}],
		"stop_reason":"end_turn","usage":{"input_tokens":10,"cache_creation_input_tokens":3,"cache_read_input_tokens":5,"output_tokens":7}}`
	res := ParseResponse(Messages, []byte(body), 100)
	u := res.Usage
	if res.Text != "Hello" || res.FinishReason != "end_turn" || u.PromptTokens != 18 || u.CompletionTokens != 7 || u.TotalTokens != 25 ||
		u.CacheCreationTokens != 3 || u.CacheReadTokens != 5 || u.Source != UsageUpstream {
		t.Errorf("%+v", res)
	}
	if res := ParseResponse(Messages, []byte(`{"content":[]}`), 100); res.Usage.Source != UsageNone {
		t.Errorf("no usage: %+v", res)
	}
}

func TestStreamTeeMessages(t *testing.T) {
	events := []string{
		"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"content\":[],\"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":4,\"output_tokens\":1}}}\n\n",
		"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
		"event: ping\ndata: {\"type\":\"ping\"}\n\n",
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi \"}}\n\n",
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"there\"}}\n\n",
		"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":{\"output_tokens\":12}}\n\n",
	}
	tee := NewStreamTee(Messages, false, 100)
	var out strings.Builder
	fwd := func(b []byte) error { out.Write(b); return nil }
	for _, ev := range events {
		if err := tee.Write([]byte(ev), fwd); err != nil {
			t.Fatal(err)
		}
	}
	if tee.Ended() {
		t.Fatal("ended before message_stop")
	}
	if err := tee.Write([]byte("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"), fwd); err != nil {
		t.Fatal(err)
	}
	res := tee.Result()
	u := res.Usage
	if !tee.Ended() || res.Text != "Hi there" || res.FinishReason != "max_tokens" || u.PromptTokens != 14 || u.CompletionTokens != 12 || u.CacheReadTokens != 4 {
		t.Errorf("ended %v, %+v", tee.Ended(), res)
	}
	if !strings.HasSuffix(out.String(), "message_stop\"}\n\n") || !strings.Contains(out.String(), "ping") {
		t.Error("the stream was not forwarded unchanged")
	}
}
