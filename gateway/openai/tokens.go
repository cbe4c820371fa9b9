package openai

// EstimateTokens estimates the tokens of s as ceil(len(s)/4) bytes per
// token: 0 for "" and at least 1 otherwise. Four bytes per token is
// OpenAI's rule of thumb for English; the estimate runs high for JSON (the
// prompts recorded are JSON, so keys and punctuation count too) and low for
// scripts of three-byte runes (CJK, about one token per rune, counts a
// third). It exists so that a record without upstream usage still carries
// a usable order of magnitude, and it is marked "estimated". It is O(1) and
// does not look at the bytes.
func EstimateTokens(s string) int { return estimateBytes(len(s)) }

// ReserveTokens estimates what a request may cost a tokens-per-minute
// budget before it is forwarded, as OpenAI's own limiter does: the prompt
// estimate (EstimateTokens of r.Prompt, high for JSON, so on the safe side)
// plus the most it may generate, r.MaxOutputTokens, or defaultOutput when
// the request sets no limit. Embeddings generate nothing. The usage the
// provider reports replaces the estimate when the answer ends.
func ReserveTokens(ep Endpoint, r Request, defaultOutput int) int {
	n := EstimateTokens(r.Prompt)
	switch {
	case ep == Embeddings:
	case r.MaxOutputTokens > 0:
		n += r.MaxOutputTokens
	default:
		n += max(defaultOutput, 0)
	}
	return n
}

func estimateBytes(n int) int {
	if n <= 0 {
		return 0
	}
	return n/4 + min(n%4, 1)
}

// EstimateIfMissing fills r.Usage by estimation when upstream reported no
// usage (r.Usage.Source is not UsageUpstream): PromptTokens from prompt
// (Request.Prompt), CompletionTokens from the response text including any
// part beyond the text cap (r.TextBytes), TotalTokens as their sum, and
// Source UsageEstimated. Upstream counts are never overwritten.
func (r *Result) EstimateIfMissing(prompt string) {
	if r.Usage.Source == UsageUpstream {
		return
	}
	p := EstimateTokens(prompt)
	c := estimateBytes(max(r.TextBytes, len(r.Text)))
	r.Usage = Usage{PromptTokens: p, CompletionTokens: c, TotalTokens: p + c, Source: UsageEstimated}
}
