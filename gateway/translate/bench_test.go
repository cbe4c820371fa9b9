package translate

import (
	"strings"
	"testing"
)

const benchChat = `{"model":"claude-x","max_tokens":256,"temperature":0.2,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hi, and tell me about the weather in Paris today."}]}`

const benchMessage = `{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"Hello! The weather in Paris today is mild with light clouds and a gentle breeze from the west."}],` +
	`"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":30,"cache_creation_input_tokens":0,"cache_read_input_tokens":4,"output_tokens":21}}`

// BenchmarkRequest is the request translation's cost per chat request.
func BenchmarkRequest(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Request([]byte(benchChat), Options{DefaultMaxTokens: 4096}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkResponse is the answer translation's cost.
func BenchmarkResponse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := Response([]byte(benchMessage), 1); !ok {
			b.Fatal("not translated")
		}
	}
}

// BenchmarkStream translates a 20-delta stream, as mockllm sends it.
func BenchmarkStream(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m1\",\"type\":\"message\",\"model\":\"claude-x\",\"content\":[],\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n")
	sb.WriteString("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n")
	for range 20 {
		sb.WriteString("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"word \"}}\n\n")
	}
	sb.WriteString("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n")
	sb.WriteString("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":20}}\n\n")
	sb.WriteString("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
	events := []byte(sb.String())
	var s Stream
	var out []byte
	b.SetBytes(int64(len(events)))
	b.ReportAllocs()
	for b.Loop() {
		s.Reset(true, 1)
		var err error
		if out, err = s.Events(out[:0], events); err != nil || !s.Done() {
			b.Fatal(err)
		}
	}
}
