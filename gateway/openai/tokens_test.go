package openai

import (
	"strings"
	"testing"
)

func TestEstimateTokens(t *testing.T) {
	for _, tc := range []struct {
		s    string
		want int
	}{{"", 0}, {"a", 1}, {"abcd", 1}, {"abcde", 2}, {strings.Repeat("x", 400), 100}, {"你好", 2}} {
		if got := EstimateTokens(tc.s); got != tc.want {
			t.Errorf("EstimateTokens(%q) = %d, want %d", tc.s, got, tc.want)
		}
	}
}

func TestReserveTokens(t *testing.T) {
	prompt := `[{"role":"user","content":"Say hi"}]` // 36 bytes: 9 tokens
	for _, tc := range []struct {
		name string
		ep   Endpoint
		r    Request
		want int
	}{
		{"prompt and max_tokens", ChatCompletions, Request{Prompt: prompt, MaxOutputTokens: 63}, 72},
		{"no limit: the default", ChatCompletions, Request{Prompt: prompt}, 9 + 256},
		{"responses", Responses, Request{Prompt: `"Hello"`, MaxOutputTokens: 16}, 2 + 16},
		{"embeddings generate nothing", Embeddings, Request{Prompt: prompt, MaxOutputTokens: 5}, 9},
		{"capped output", Completions, Request{MaxOutputTokens: MaxOutputTokensCap}, MaxOutputTokensCap},
	} {
		if got := ReserveTokens(tc.ep, tc.r, 256); got != tc.want {
			t.Errorf("%s: ReserveTokens = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestEstimateIfMissing(t *testing.T) {
	tests := []struct {
		name   string
		in     Result
		prompt string
		want   Usage
	}{
		{"upstream counts kept", Result{Text: "hello", Usage: Usage{PromptTokens: 1, CompletionTokens: 2, TotalTokens: 3, Source: UsageUpstream}}, "prompt", Usage{PromptTokens: 1, CompletionTokens: 2, TotalTokens: 3, Source: UsageUpstream}},
		{"estimated from prompt and text", Result{Text: "12345678", TextBytes: 8, Usage: Usage{Source: UsageNone}}, `[{"role":"user"}]`, Usage{PromptTokens: 5, CompletionTokens: 2, TotalTokens: 7, Source: UsageEstimated}},
		{"truncated text counts in full", Result{Text: "1234", TextBytes: 400, Truncated: true, Usage: Usage{Source: UsageNone}}, "", Usage{PromptTokens: 0, CompletionTokens: 100, TotalTokens: 100, Source: UsageEstimated}},
		{"zero value Result", Result{}, "abc", Usage{PromptTokens: 1, CompletionTokens: 0, TotalTokens: 1, Source: UsageEstimated}},
		{"re-estimating is stable", Result{Text: "abcd", TextBytes: 4, Usage: Usage{PromptTokens: 9, CompletionTokens: 9, TotalTokens: 18, Source: UsageEstimated}}, "ab", Usage{PromptTokens: 1, CompletionTokens: 1, TotalTokens: 2, Source: UsageEstimated}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.in
			r.EstimateIfMissing(tc.prompt)
			if r.Usage != tc.want {
				t.Fatalf("Usage %+v, want %+v", r.Usage, tc.want)
			}
		})
	}
}
