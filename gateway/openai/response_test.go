package openai

import (
	"strings"
	"testing"
)

func TestParseResponse(t *testing.T) {
	tests := []struct {
		name    string
		ep      Endpoint
		body    string
		maxText int
		want    Result
	}{
		{"chat", ChatCompletions, string(readTestdata(t, "chat_response.json")), 1 << 20, Result{
			Text:         "The image shows a wooden boardwalk extending through a lush green marshland. Café \"quoted\" 🙂",
			TextBytes:    len("The image shows a wooden boardwalk extending through a lush green marshland. Café \"quoted\" 🙂"),
			FinishReason: "stop",
			Usage:        Usage{PromptTokens: 1117, CompletionTokens: 46, TotalTokens: 1163, Source: UsageUpstream},
		}},
		{"chat text cap inside a rune", ChatCompletions, string(readTestdata(t, "chat_response.json")), 80, Result{
			Text:         "The image shows a wooden boardwalk extending through a lush green marshland. Caf",
			Truncated:    true,
			TextBytes:    len("The image shows a wooden boardwalk extending through a lush green marshland. Café \"quoted\" 🙂"),
			FinishReason: "stop",
			Usage:        Usage{PromptTokens: 1117, CompletionTokens: 46, TotalTokens: 1163, Source: UsageUpstream},
		}},
		{"chat content parts, choice 0 not first", ChatCompletions,
			`{"choices":[{"index":1,"message":{"content":"other"},"finish_reason":"stop"},{"index":0,"message":{"role":"assistant","content":[{"type":"text","text":"Hello, "},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"world"}]},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":4}}`,
			100, Result{Text: "Hello, world", TextBytes: 12, FinishReason: "length", Usage: Usage{PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7, Source: UsageUpstream}}},
		{"chat tool call without content", ChatCompletions,
			`{"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}`,
			100, Result{FinishReason: "tool_calls", Usage: Usage{PromptTokens: 9, CompletionTokens: 2, TotalTokens: 11, Source: UsageUpstream}}},
		{"completions", Completions,
			`{"id":"cmpl-1","object":"text_completion","choices":[{"text":"\n\nThis is a test.","index":0,"logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}`,
			100, Result{Text: "\n\nThis is a test.", TextBytes: 17, FinishReason: "length", Usage: Usage{PromptTokens: 5, CompletionTokens: 7, TotalTokens: 12, Source: UsageUpstream}}},
		{"embeddings", Embeddings, string(readTestdata(t, "embeddings_response.json")), 100,
			Result{Usage: Usage{PromptTokens: 8, TotalTokens: 8, Source: UsageUpstream}}},
		{"embeddings without usage", Embeddings, `{"object":"list","data":[]}`, 100, Result{Usage: Usage{Source: UsageNone}}},
		{"responses", Responses, string(readTestdata(t, "responses_response.json")), 100, Result{
			Text: responsesStreamText + " More.", TextBytes: len(responsesStreamText + " More."),
			FinishReason: "completed", Usage: Usage{PromptTokens: 37, CompletionTokens: 11, TotalTokens: 48, Source: UsageUpstream},
		}},
		{"error body", ChatCompletions, `{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}}`, 100,
			Result{Usage: Usage{Source: UsageNone}}},
		{"garbage", ChatCompletions, `<html>502 Bad Gateway</html>`, 100, Result{Usage: Usage{Source: UsageNone}}},
		{"truncated", Responses, `{"output":[{"content":[{"type":"output_text","text":"x"}]}],"usage":{"input_tokens":1`, 100, Result{Usage: Usage{Source: UsageNone}}},
		{"empty", Completions, ``, 100, Result{Usage: Usage{Source: UsageNone}}},
		{"usage of the wrong type", ChatCompletions, `{"choices":[],"usage":[1,2]}`, 100, Result{Usage: Usage{Source: UsageNone}}},
		{"negative and fractional counts", ChatCompletions, `{"usage":{"prompt_tokens":-4,"completion_tokens":2.0,"total_tokens":"9"}}`, 100,
			Result{Usage: Usage{PromptTokens: 0, CompletionTokens: 2, TotalTokens: 2, Source: UsageUpstream}}},
		{"chat total that does not add up", ChatCompletions,
			`{"choices":[{"index":0,"message":{"content":"ok"}}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":999999,"completion_tokens_details":{"reasoning_tokens":1}}}`, 100,
			Result{Text: "ok", TextBytes: 2, Usage: Usage{PromptTokens: 1, CompletionTokens: 1, TotalTokens: 2, Discrepant: true, ReportedTotal: 999999, Source: UsageUpstream}}},
		{"chat total below the sum", ChatCompletions, `{"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":0}}`, 100,
			Result{Usage: Usage{PromptTokens: 10, CompletionTokens: 5, TotalTokens: 15, Discrepant: true, Source: UsageUpstream}}},
		{"a total alone adds up to nothing", Completions, `{"choices":[{"text":"x"}],"usage":{"total_tokens":999999}}`, 100,
			Result{Text: "x", TextBytes: 1, Usage: Usage{Source: UsageNone}}},
		{"responses total that does not add up", Responses, `{"status":"completed","usage":{"input_tokens":1,"output_tokens":1,"total_tokens":999999}}`, 100,
			Result{FinishReason: "completed", Usage: Usage{PromptTokens: 1, CompletionTokens: 1, TotalTokens: 2, Discrepant: true, ReportedTotal: 999999, Source: UsageUpstream}}},
		{"embeddings total is the prompt", Embeddings, `{"data":[],"usage":{"prompt_tokens":8,"completion_tokens":500,"total_tokens":999999}}`, 100,
			Result{Usage: Usage{PromptTokens: 8, TotalTokens: 8, Discrepant: true, ReportedTotal: 999999, Source: UsageUpstream}}},
		{"embeddings completion_tokens ignored", Embeddings, `{"data":[],"usage":{"prompt_tokens":8,"completion_tokens":500,"total_tokens":8}}`, 100,
			Result{Usage: Usage{PromptTokens: 8, TotalTokens: 8, Source: UsageUpstream}}},
		{"unknown endpoint", 0, `{"usage":{"prompt_tokens":1}}`, 100, Result{Usage: Usage{Source: UsageNone}}},
		{"chat cached tokens", ChatCompletions, `{"choices":[],"usage":{"prompt_tokens":2006,"prompt_tokens_details":{"audio_tokens":0,"cached_tokens":1920},"completion_tokens":300,"completion_tokens_details":{"cached_tokens":7}}}`, 100,
			Result{Usage: Usage{PromptTokens: 2006, CompletionTokens: 300, TotalTokens: 2306, CacheReadTokens: 1920, Source: UsageUpstream}}},
		{"chat cached tokens beyond the prompt, repeated details", ChatCompletions, `{"choices":[],"usage":{"prompt_tokens_details":{"cached_tokens":50},"prompt_tokens_details":{"cached_tokens":1},"prompt_tokens":20,"completion_tokens":1}}`, 100,
			Result{Usage: Usage{PromptTokens: 20, CompletionTokens: 1, TotalTokens: 21, CacheReadTokens: 20, Source: UsageUpstream}}},
		{"chat details of the wrong type", ChatCompletions, `{"choices":[],"usage":{"prompt_tokens":20,"prompt_tokens_details":null,"completion_tokens":1}}`, 100,
			Result{Usage: Usage{PromptTokens: 20, CompletionTokens: 1, TotalTokens: 21, Source: UsageUpstream}}},
		{"responses cached tokens", Responses, `{"status":"completed","usage":{"input_tokens":100,"input_tokens_details":{"cached_tokens":64},"output_tokens":5,"output_tokens_details":{"reasoning_tokens":2}}}`, 100,
			Result{FinishReason: "completed", Usage: Usage{PromptTokens: 100, CompletionTokens: 5, TotalTokens: 105, CacheReadTokens: 64, Source: UsageUpstream}}},
		{"hostile finish reason is bounded", ChatCompletions, `{"choices":[{"index":0,"finish_reason":"` + strings.Repeat("z", 1000) + `"}]}`, 100,
			Result{FinishReason: strings.Repeat("z", maxFinishReason), Usage: Usage{Source: UsageNone}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ParseResponse(tc.ep, []byte(tc.body), tc.maxText); got != tc.want {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseResponseDoesNotAlias(t *testing.T) {
	body := []byte(`{"choices":[{"index":0,"message":{"content":"keep me"}}]}`)
	r := ParseResponse(ChatCompletions, body, 100)
	copy(body, strings.Repeat("x", len(body)))
	ParseResponse(ChatCompletions, []byte(`{"choices":[{"index":0,"message":{"content":"other text"}}]}`), 100)
	if r.Text != "keep me" {
		t.Fatalf("Text changed to %q after the body and the parser were reused", r.Text)
	}
}
