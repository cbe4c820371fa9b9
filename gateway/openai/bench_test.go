package openai

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// benchChatRequest is a ~1 KB streaming chat request.
var benchChatRequest = []byte(`{"model":"gpt-4o-mini","stream":true,"temperature":0.7,"max_tokens":512,"user":"tenant-42",` +
	`"messages":[{"role":"system","content":"You are a helpful assistant for Bulkhead, a multi-tenant LLM gateway. Answer briefly and cite the configuration key when you mention one."},` +
	`{"role":"user","content":"How do I set a per-key rate limit? I run three replicas behind a load balancer and want the limit to hold across all of them, not per instance."},` +
	`{"role":"assistant","content":"Set rate_limit_per_minute on the key. Limits live in Redis, so every replica shares them; if Redis is lost each replica falls back to a local limiter."},` +
	`{"role":"user","content":"And tokens per minute? Our biggest tenant sends long prompts with retrieved documents, around 20k tokens each, and we want to cap that separately from the request rate. Does the gateway count prompt tokens before forwarding, or only after the upstream reports usage? caf\u00e9 \"quoted\""}]}`)

// benchChatResponse is a ~600-byte chat completion.
var benchChatResponse = []byte(`{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion","created":1741570283,"model":"gpt-4o-2024-08-06",` +
	`"choices":[{"index":0,"message":{"role":"assistant","content":"Set tokens_per_minute on the key. Usage is counted after upstream reports it.","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],` +
	`"usage":{"prompt_tokens":1117,"completion_tokens":46,"total_tokens":1163,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},` +
	`"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},` +
	`"service_tier":"default","system_fingerprint":"fp_fc9f1d7035"}`)

func BenchmarkParseRequest(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchChatRequest)))
	for b.Loop() {
		if _, err := ParseRequest(ChatCompletions, benchChatRequest); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseRequestPathological(b *testing.B) {
	for _, bc := range []struct {
		name string
		body []byte
	}{
		{"10k-deep", []byte(`{"model":"m","messages":` + strings.Repeat("[", 10_000) + strings.Repeat("]", 10_000) + `}`)},
		{"1M-messages", []byte(`{"model":"m","messages":[` + strings.Repeat(`{},`, 999_999) + `{}]}`)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ParseRequest(ChatCompletions, bc.body); err == nil {
					b.Fatal("accepted")
				}
			}
		})
	}
}

// BenchmarkParseRequestFoldedNames: 10,000 members whose names must be
// case-folded (capitals, Kelvin signs) but match nothing, the worst case of
// the case-variant check.
func BenchmarkParseRequestFoldedNames(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"model":"m","messages":[]`)
	for i := range 10_000 {
		fmt.Fprintf(&sb, ",\"Max_To\u212Aens_%05d\":1", i) // a raw Kelvin sign: no escape to decode
	}
	body := []byte(sb.String() + "}")
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := ParseRequest(ChatCompletions, body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWithStreamUsage(b *testing.B) {
	withOpts := bytes.Replace(benchChatRequest, []byte(`"stream":true,`), []byte(`"stream":true,"stream_options":{"include_usage":false},`), 1)
	for _, bc := range []struct {
		name string
		body []byte
	}{
		{"insert", benchChatRequest},
		{"rewrite-false", withOpts},
		{"already-true", bytes.Replace(withOpts, []byte(`:false}`), []byte(`:true}`), 1)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := WithStreamUsage(bc.body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkStreamTee runs whole streams (one op = one stream): the chat
// stream of testdata/chat_stream_usage.sse, 20 content chunks, a finish
// chunk, the usage chunk (dropped) and [DONE], one event per Write as
// upstream sends them.
func BenchmarkStreamTee(b *testing.B) {
	stream := readTestdata(b, "chat_stream_usage.sse")
	var events [][]byte
	for _, ev := range strings.SplitAfter(string(stream), "\n\n") {
		if ev != "" {
			events = append(events, []byte(ev))
		}
	}
	forwarded := 0
	forward := func(p []byte) error { forwarded += len(p); return nil }
	run := func(b *testing.B, tee *StreamTee, chunks [][]byte) {
		for _, c := range chunks {
			if err := tee.Write(c, forward); err != nil {
				b.Fatal(err)
			}
		}
		if err := tee.Flush(forward); err != nil {
			b.Fatal(err)
		}
		if r := tee.Result(); r.Usage.TotalTokens != 40 || r.Text != chatStreamText {
			b.Fatalf("Result %+v", r)
		}
	}
	report := func(b *testing.B) {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(events)), "ns/event")
	}
	b.Run("pooled", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(stream)))
		for b.Loop() {
			tee := AcquireStreamTee(ChatCompletions, true, 64<<10)
			run(b, tee, events)
			ReleaseStreamTee(tee)
		}
		report(b)
	})
	// The gateway's case: the tee checks every event for a provider key.
	secrets := NewSecrets("sk-provider-SECRET-0123456789abcdef")
	b.Run("pooled/secrets", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(stream)))
		for b.Loop() {
			tee := AcquireStreamTee(ChatCompletions, true, 64<<10)
			tee.SetSecrets(secrets)
			run(b, tee, events)
			ReleaseStreamTee(tee)
		}
		report(b)
	})
	b.Run("pooled/one-write", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(stream)))
		for b.Loop() {
			tee := AcquireStreamTee(ChatCompletions, true, 64<<10)
			run(b, tee, [][]byte{stream})
			ReleaseStreamTee(tee)
		}
		report(b)
	})
	b.Run("new", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(stream)))
		for b.Loop() {
			run(b, NewStreamTee(ChatCompletions, true, 64<<10), events)
		}
		report(b)
	})
}

func BenchmarkParseResponse(b *testing.B) {
	b.Run("chat-600B", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(benchChatResponse)))
		for b.Loop() {
			if r := ParseResponse(ChatCompletions, benchChatResponse, 64<<10); r.Usage.Source != UsageUpstream {
				b.Fatal(r)
			}
		}
	})
	emb := readTestdata(b, "embeddings_response.json")
	b.Run("embeddings-38KB", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(emb)))
		for b.Loop() {
			if r := ParseResponse(Embeddings, emb, 64<<10); r.Usage.Source != UsageUpstream {
				b.Fatal(r)
			}
		}
	})
}
