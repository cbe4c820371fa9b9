package mock

import "strings"

// sentence is the unit every generated completion is made of. It must stay
// plain ASCII without quotes or backslashes: stream chunks are sliced out of
// the text and must need no JSON escaping beyond what appendJSONString does.
const sentence = "This is a mock response from mockllm."

// baseWords is the number of words in every completion whose stream has at
// most baseWords chunks: nine repetitions of sentence, which makes a
// non-stream chat completion for model "gpt-4o-mini" about 600 bytes.
const baseWords = 63

// completionText is the deterministic assistant output, shared by every
// endpoint. It is immutable after construction and safe for concurrent use.
//
// Token accounting: completion_tokens (output_tokens for the Responses API)
// is the number of space-separated words in the text. Streams split the text
// on word boundaries, so the concatenated deltas equal the non-stream text
// and both modes report the same count.
type completionText struct {
	s      string // words joined by single spaces
	starts []int  // byte offset of each word in s
	quoted []byte // s as a JSON string literal, quotes included
}

// newCompletionText returns the text for a response streamed in chunks
// content chunks: the first max(baseWords, chunks) words of sentence
// repeated. Every chunk therefore holds at least one word, and the text, and
// so completion_tokens, depends only on the chunk count.
func newCompletionText(chunks int) completionText {
	n := max(baseWords, chunks)
	words := strings.Fields(sentence)
	var b strings.Builder
	starts := make([]int, n)
	for i := range n {
		if i > 0 {
			b.WriteByte(' ')
		}
		starts[i] = b.Len()
		b.WriteString(words[i%len(words)])
	}
	s := b.String()
	return completionText{s: s, starts: starts, quoted: appendJSONString(nil, s)}
}

// words returns the number of words in t, which is the completion token
// count.
func (t completionText) words() int { return len(t.starts) }

// chunk returns the i-th of n contiguous pieces of t, split on word
// boundaries with each piece keeping its trailing space, so that the n pieces
// concatenate to t.s. It requires 0 <= i < n <= t.words().
func (t completionText) chunk(i, n int) string {
	w := t.words()
	from, to := i*w/n, (i+1)*w/n
	end := len(t.s)
	if to < w {
		end = t.starts[to]
	}
	return t.s[t.starts[from]:end]
}
