package openai

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Expected content of the testdata streams.
const (
	chatStreamText      = "Hello! Bulkhead keeps one tenant's flood from sinking the ship — héllo 🙂 你好 \"quoted\" tab\t new\nline end"
	responsesStreamText = "Hi there, tenant ✓."
)

// withEOL rewrites the "\n" line endings of an SSE stream whose payloads
// hold no raw newlines (they are JSON-escaped) to eol.
func withEOL(b []byte, eol string) []byte {
	return bytes.ReplaceAll(b, []byte("\n"), []byte(eol))
}

// withoutUsageOnly returns stream with its usage-only events (events end at
// sep) removed.
func withoutUsageOnly(stream []byte, sep string) []byte {
	var out []byte
	for _, ev := range strings.SplitAfter(string(stream), sep) {
		if !isUsageOnly(ev) {
			out = append(out, ev...)
		}
	}
	return out
}

// isUsageOnly recognizes the usage-only chunks of the testdata streams.
func isUsageOnly(ev string) bool {
	return strings.Contains(ev, `"choices":[]`) && strings.Contains(ev, `"usage":{`)
}

// recorder is a forward function that keeps what it is given.
type recorder struct {
	out   []byte
	calls int
}

func (r *recorder) forward(b []byte) error {
	r.out = append(r.out, b...)
	r.calls++
	return nil
}

// feedChunks writes chunks to tee, flushes, and returns what was forwarded.
func feedChunks(t testing.TB, tee *StreamTee, chunks [][]byte) []byte {
	t.Helper()
	var r recorder
	for _, c := range chunks {
		if err := tee.Write(c, r.forward); err != nil {
			t.Fatal(err)
		}
		if len(tee.pending) > MaxEventBytes {
			t.Fatalf("pending event buffer holds %d bytes, more than MaxEventBytes", len(tee.pending))
		}
	}
	if err := tee.Flush(r.forward); err != nil {
		t.Fatal(err)
	}
	return r.out
}

type streamCase struct {
	name    string
	ep      Endpoint
	drop    bool
	input   []byte
	sep     string // event terminator used by input
	want    []byte // forwarded bytes
	result  Result
	maxText int
}

func streamCases(t testing.TB) []streamCase {
	chatU := readTestdata(t, "chat_stream_usage.sse")
	chat := readTestdata(t, "chat_stream.sse")
	cmpl := readTestdata(t, "completions_stream_usage.sse")
	resp := readTestdata(t, "responses_stream.sse")
	chatUsage := Usage{PromptTokens: 19, CompletionTokens: 21, TotalTokens: 40, Source: UsageUpstream}
	chatResult := Result{Text: chatStreamText, TextBytes: len(chatStreamText), Usage: chatUsage, FinishReason: "stop"}
	noUsage := chatResult
	noUsage.Usage = Usage{Source: UsageNone}
	crlf, cr := withEOL(chatU, "\r\n"), withEOL(chatU, "\r")
	respNoEventLines := regexpStrip(resp, "event: ")

	return []streamCase{
		{"chat/usage/dropped", ChatCompletions, true, chatU, "\n\n", withoutUsageOnly(chatU, "\n\n"), chatResult, 1 << 20},
		{"chat/usage/kept", ChatCompletions, false, chatU, "\n\n", chatU, chatResult, 1 << 20},
		{"chat/no-usage", ChatCompletions, true, chat, "\n\n", chat, noUsage, 1 << 20},
		{"chat/crlf/dropped", ChatCompletions, true, crlf, "\r\n\r\n", withoutUsageOnly(crlf, "\r\n\r\n"), chatResult, 1 << 20},
		{"chat/cr/dropped", ChatCompletions, true, cr, "\r\r", withoutUsageOnly(cr, "\r\r"), chatResult, 1 << 20},
		{"completions/usage/dropped", Completions, true, cmpl, "\n\n", withoutUsageOnly(cmpl, "\n\n"),
			Result{Text: "Once upon a time", TextBytes: 16, FinishReason: "length", Usage: Usage{PromptTokens: 5, CompletionTokens: 4, TotalTokens: 9, Source: UsageUpstream}}, 1 << 20},
		{"responses", Responses, true, resp, "\n\n", resp,
			Result{Text: responsesStreamText, TextBytes: len(responsesStreamText), FinishReason: "completed", Usage: Usage{PromptTokens: 37, CompletionTokens: 11, TotalTokens: 48, Source: UsageUpstream}}, 1 << 20},
		{"responses/no-event-lines", Responses, false, respNoEventLines, "\n\n", respNoEventLines,
			Result{Text: responsesStreamText, TextBytes: len(responsesStreamText), FinishReason: "completed", Usage: Usage{PromptTokens: 37, CompletionTokens: 11, TotalTokens: 48, Source: UsageUpstream}}, 1 << 20},
	}
}

// regexpStrip drops the lines starting with prefix.
func regexpStrip(b []byte, prefix string) []byte {
	var out []byte
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if !strings.HasPrefix(l, prefix) {
			out = append(out, l...)
		}
	}
	return out
}

func TestStreamTeeSplits(t *testing.T) {
	for _, tc := range streamCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			if strings.HasSuffix(tc.name, "/dropped") && len(tc.want) >= len(tc.input) {
				t.Fatal("test case drops nothing")
			}
			check := func(t *testing.T, how string, chunks [][]byte) {
				t.Helper()
				tee := NewStreamTee(tc.ep, tc.drop, tc.maxText)
				got := feedChunks(t, tee, chunks)
				if !bytes.Equal(got, tc.want) {
					t.Fatalf("%s: forwarded bytes differ from the input minus the dropped event\ngot  %q\nwant %q", how, tail(got), tail(tc.want))
				}
				if r := tee.Result(); r != tc.result {
					t.Fatalf("%s: Result\ngot  %+v\nwant %+v", how, r, tc.result)
				}
			}
			check(t, "whole", [][]byte{tc.input})
			for k := 0; k <= len(tc.input); k++ {
				check(t, "split at "+itoa(k), [][]byte{tc.input[:k], tc.input[k:]})
			}
			rng := rand.New(rand.NewPCG(1, uint64(len(tc.input))))
			for range 50 {
				var chunks [][]byte
				for rest := tc.input; len(rest) > 0; {
					n := min(len(rest), 1+rng.IntN(40))
					chunks, rest = append(chunks, rest[:n]), rest[n:]
				}
				check(t, "random splits", chunks)
			}
		})
	}
}

// TestStreamTeeForwardsPromptly feeds streams byte by byte and checks that
// after every byte exactly the complete events seen so far (less the dropped
// one) have been forwarded: nothing partial, nothing late.
func TestStreamTeeForwardsPromptly(t *testing.T) {
	for _, tc := range streamCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			var (
				ends    []int // end offsets of events in input
				dropped []bool
			)
			off := 0
			for _, ev := range strings.SplitAfter(string(tc.input), tc.sep) {
				off += len(ev)
				ends = append(ends, off)
				dropped = append(dropped, tc.drop && tc.ep != Responses && isUsageOnly(ev))
			}
			tee := NewStreamTee(tc.ep, tc.drop, tc.maxText)
			var r recorder
			next, skipped := 0, 0
			for i := range tc.input {
				if err := tee.Write(tc.input[i:i+1], r.forward); err != nil {
					t.Fatal(err)
				}
				for next < len(ends) && ends[next] <= i+1 {
					if dropped[next] {
						skipped += ends[next] - prevEnd(ends, next)
					}
					next++
				}
				want := prevEnd(ends, next) - skipped
				if len(r.out) != want {
					t.Fatalf("after %d bytes: forwarded %d bytes, want %d (complete events only)", i+1, len(r.out), want)
				}
			}
		})
	}
}

func prevEnd(ends []int, n int) int {
	if n == 0 {
		return 0
	}
	return ends[n-1]
}

func TestStreamTeeEvents(t *testing.T) {
	tests := []struct {
		name      string
		ep        Endpoint
		drop      bool
		input     string
		want      string // forwarded; "=" means the input unchanged
		text      string
		finish    string
		usage     Usage
		malformed int
	}{
		{
			name: "malformed payloads forwarded unchanged and ignored",
			ep:   ChatCompletions, drop: true,
			input: "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"A\"}}]}\n\n" +
				"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"B\"\n\n" +
				"data: not json at all\n\n" +
				"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}} trailing\n\n" +
				"data: [1,2]\n\n" +
				"data: {\"choices\":{},\"usage\":7}\n\n" +
				"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"C\"}}]}\n\n",
			want: "=", text: "AC", usage: Usage{Source: UsageNone}, malformed: 4,
		},
		{
			name: "comments, id, retry, multi-line data, no space after colon",
			ep:   ChatCompletions,
			input: ": keep-alive\n\n" +
				"id: 7\nretry: 1000\nevent: message\ndata: {\"choices\":[{\"index\":0,\ndata: \"delta\":{\"content\":\"X\"}}]}\n\n" +
				"data:{\"choices\":[{\"index\":1,\"delta\":{\"content\":\"other choice\"}},{\"index\":0,\"delta\":{\"content\":\"Y\"},\"finish_reason\":\"length\"}]}\n\n" +
				"data: [DONE]\n\n",
			want: "=", text: "XY", finish: "length", usage: Usage{Source: UsageNone},
		},
		{
			name: "usage in every chunk, last wins; not usage-only so never dropped",
			ep:   ChatCompletions, drop: true,
			input: "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n" +
				"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n" +
				"data: {\"choices\":[],\"usage\":null}\n\n",
			want: "=", text: "ab", usage: Usage{PromptTokens: 3, CompletionTokens: 2, TotalTokens: 5, Source: UsageUpstream},
		},
		{
			name: "usage-only chunk with id and event fields dropped whole",
			ep:   ChatCompletions, drop: true,
			input: "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\nid: 9\nevent: x\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}\n\ndata: [DONE]\n\n",
			want:  "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\n",
			text:  "a", usage: Usage{PromptTokens: 1, CompletionTokens: 1, TotalTokens: 2, Source: UsageUpstream},
		},
		{
			name: "responses streams never drop",
			ep:   Responses, drop: true,
			input: "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n",
			want:  "=", usage: Usage{Source: UsageNone},
		},
		{
			name: "responses: only deltas make text; done events are not parsed",
			ep:   Responses,
			input: "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"one\"}\n\n" +
				"event: response.output_text.done\ndata: {\"type\":\"response.output_text.done\",\"text\":\"one\"}\n\n" +
				"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\" two\"}\n\n" +
				"event: response.incomplete\ndata: {\"type\":\"response.incomplete\",\"response\":{\"status\":\"incomplete\",\"usage\":{\"input_tokens\":5,\"output_tokens\":2,\"total_tokens\":7}}}\n\n",
			want: "=", text: "one two", finish: "incomplete", usage: Usage{PromptTokens: 5, CompletionTokens: 2, TotalTokens: 7, Source: UsageUpstream},
		},
		{
			name: "a final usage chunk whose total does not add up: the sum counts, the claim is flagged",
			ep:   ChatCompletions, drop: true,
			input: "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n" +
				"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":999999}}\n\ndata: [DONE]\n\n",
			want: "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\n",
			text: "a", usage: Usage{PromptTokens: 1, CompletionTokens: 1, TotalTokens: 2, Discrepant: true, ReportedTotal: 999999, Source: UsageUpstream},
		},
		{
			name: "completions: a usage chunk with only a total adds up to nothing",
			ep:   Completions, drop: true,
			input: "data: {\"choices\":[{\"index\":0,\"text\":\"a\"}]}\n\n" +
				"data: {\"choices\":[],\"usage\":{\"total_tokens\":999999}}\n\n",
			want: "data: {\"choices\":[{\"index\":0,\"text\":\"a\"}]}\n\n",
			text: "a", usage: Usage{Source: UsageNone},
		},
		{
			name: "responses: response.completed whose total does not add up",
			ep:   Responses,
			input: "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}\n\n" +
				"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"status\":\"completed\",\"usage\":{\"input_tokens\":1,\"output_tokens\":1,\"total_tokens\":999999,\"output_tokens_details\":{\"reasoning_tokens\":1}}}}\n\n",
			want: "=", text: "hi", finish: "completed",
			usage: Usage{PromptTokens: 1, CompletionTokens: 1, TotalTokens: 2, Discrepant: true, ReportedTotal: 999999, Source: UsageUpstream},
		},
		{
			name:  "mixed line endings",
			ep:    ChatCompletions,
			input: "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\r\n\n" + "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}]}\n\r\n" + "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"c\"}}]}\r\r\n",
			want:  "=", text: "abc", usage: Usage{Source: UsageNone},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			if want == "=" {
				want = tc.input
			}
			for k := 0; k <= len(tc.input); k++ {
				tee := NewStreamTee(tc.ep, tc.drop, 1<<10)
				got := feedChunks(t, tee, [][]byte{[]byte(tc.input[:k]), []byte(tc.input[k:])})
				if string(got) != want {
					t.Fatalf("split at %d: forwarded\n%q\nwant\n%q", k, got, want)
				}
				r := tee.Result()
				if r.Text != tc.text || r.FinishReason != tc.finish || r.Usage != tc.usage {
					t.Fatalf("split at %d: Result %+v, want text %q finish %q usage %+v", k, r, tc.text, tc.finish, tc.usage)
				}
				if got := tee.Stats().Malformed; got != tc.malformed {
					t.Fatalf("split at %d: Stats.Malformed = %d, want %d", k, got, tc.malformed)
				}
			}
		})
	}
}

func TestStreamTeeTextCap(t *testing.T) {
	input := readTestdata(t, "chat_stream_usage.sse")
	full := chatStreamText
	for limit := 0; limit <= len(full)+1; limit++ {
		tee := NewStreamTee(ChatCompletions, true, limit)
		feedChunks(t, tee, [][]byte{input})
		r := tee.Result()
		want := string(truncateUTF8([]byte(full), limit))
		if r.Text != want || r.Truncated != (len(full) > limit) || r.TextBytes != len(full) || !utf8.ValidString(r.Text) {
			t.Fatalf("maxText %d: Text %q Truncated %v TextBytes %d; want %q %v %d", limit, r.Text, r.Truncated, r.TextBytes, want, len(full) > limit, len(full))
		}
	}
}

func TestStreamTeeOversizedEvent(t *testing.T) {
	big := "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" + strings.Repeat("x", 2*MaxEventBytes) + "\"}}]}\n\n"
	after := "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"after\"}}]}\n\n"
	usage := "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}\n\n"
	input := []byte(big + after + usage + "data: [DONE]\n\n")
	want := []byte(big + after + "data: [DONE]\n\n")
	for _, size := range []int{3, 4096, 65536, len(input)} {
		t.Run("chunks of "+itoa(size), func(t *testing.T) {
			var chunks [][]byte
			for rest := input; len(rest) > 0; {
				n := min(size, len(rest))
				chunks, rest = append(chunks, rest[:n]), rest[n:]
			}
			tee := NewStreamTee(ChatCompletions, true, 1<<10)
			got := feedChunks(t, tee, chunks) // also checks len(pending) <= MaxEventBytes after every Write
			if !bytes.Equal(got, want) {
				t.Fatalf("forwarded %d bytes, want %d", len(got), len(want))
			}
			if cap(tee.pending) > 2*MaxEventBytes {
				t.Fatalf("pending buffer grew to %d bytes", cap(tee.pending))
			}
			r := tee.Result()
			if r.Text != "after" || r.Usage.TotalTokens != 2 {
				t.Fatalf("Result %+v: want text from the events after the oversized one only", r)
			}
			if s := tee.Stats(); s.Oversized != 1 || s.Dropped != 1 || s.Events != 4 {
				t.Fatalf("Stats %+v, want 1 oversized, 1 dropped, 4 events", s)
			}
		})
	}
}

func TestStreamTeeForwardError(t *testing.T) {
	input := readTestdata(t, "chat_stream_usage.sse")
	gone := errors.New("client gone")
	calls := 0
	tee := NewStreamTee(ChatCompletions, true, 1<<10)
	err := tee.Write(input, func([]byte) error { calls++; return gone })
	if !errors.Is(err, gone) || calls != 1 {
		t.Fatalf("Write = %v after %d forward calls; want the forward error after 1 call", err, calls)
	}
	if r := tee.Result(); r.Text != chatStreamText || r.Usage.TotalTokens != 40 {
		t.Fatalf("Result %+v: want everything in p learned despite the error", r)
	}
	// A proxy whose client left may keep draining with a nil forward.
	if err := tee.Write([]byte("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":21,\"total_tokens\":41}}\n\n"), nil); err != nil {
		t.Fatal(err)
	}
	if got := tee.Result().Usage.TotalTokens; got != 41 {
		t.Fatalf("TotalTokens = %d after draining, want 41", got)
	}
}

func TestStreamTeeFlush(t *testing.T) {
	tests := []struct {
		name, input, want, text string
		total                   int
	}{
		{"partial event forwarded and learned", "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tail\"}}]}", "=", "tail", 0},
		{"partial usage-only chunk is not dropped", "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3}}\n", "=", "", 5},
		{"held CRLF event at end of stream is complete, so dropped", "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3}}\r\n\r", "", "", 5},
		{"nothing pending", "data: [DONE]\n\n", "=", "", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tee := NewStreamTee(ChatCompletions, true, 100)
			var before, after recorder
			if err := tee.Write([]byte(tc.input), before.forward); err != nil {
				t.Fatal(err)
			}
			if err := tee.Flush(after.forward); err != nil {
				t.Fatal(err)
			}
			want := tc.want
			if want == "=" {
				want = tc.input
			}
			if got := string(before.out) + string(after.out); got != want {
				t.Fatalf("forwarded %q, want %q", got, want)
			}
			if r := tee.Result(); r.Text != tc.text || r.Usage.TotalTokens != tc.total {
				t.Fatalf("Result %+v, want text %q total %d", r, tc.text, tc.total)
			}
		})
	}
}

func TestStreamTeeReuse(t *testing.T) {
	input := readTestdata(t, "chat_stream_usage.sse")
	tee := AcquireStreamTee(ChatCompletions, true, 1<<10)
	feedChunks(t, tee, [][]byte{input[:100]}) // an abandoned stream
	ReleaseStreamTee(tee)
	for range 3 {
		tee := AcquireStreamTee(ChatCompletions, true, 1<<10)
		feedChunks(t, tee, [][]byte{input})
		if r := tee.Result(); r.Text != chatStreamText || r.Usage.TotalTokens != 40 || r.FinishReason != "stop" {
			t.Fatalf("reused tee: Result %+v", r)
		}
		ReleaseStreamTee(tee)
	}
	if r := NewStreamTee(Responses, false, 0).Result(); r.Usage.Source != UsageNone || r.Text != "" {
		t.Fatalf("fresh tee Result %+v, want empty with Source none", r)
	}
}

func FuzzStreamTee(f *testing.F) {
	f.Add([]byte("data: {\"choices\":[],\"usage\":{\"total_tokens\":5}}\r\n\r\n"), uint16(3), true)
	f.Add(readTestdata(f, "chat_stream_usage.sse"), uint16(300), false)
	f.Add([]byte("data: x\r\r\n\n\r"), uint16(1), false)
	f.Fuzz(func(t *testing.T, input []byte, split uint16, responses bool) {
		ep := ChatCompletions
		if responses {
			ep = Responses
		}
		// Without dropping, everything is forwarded in order, however split.
		k := int(split) % (len(input) + 1)
		tee := NewStreamTee(ep, false, 64)
		got := feedChunks(t, tee, [][]byte{input[:k], input[k:]})
		if !bytes.Equal(got, input) {
			t.Fatalf("forwarded %q, want %q", got, input)
		}
		want := tee.Result()
		// The split point changes nothing learned.
		tee2 := NewStreamTee(ep, false, 64)
		feedChunks(t, tee2, [][]byte{input})
		if tee2.Result() != want {
			t.Fatalf("whole: %+v; split at %d: %+v", tee2.Result(), k, want)
		}
		if !utf8.ValidString(want.Text) && utf8.Valid(input) {
			t.Fatalf("Text %q is not valid UTF-8", want.Text)
		}
	})
}

func tail(b []byte) []byte {
	if len(b) > 200 {
		return b[len(b)-200:]
	}
	return b
}

func itoa(n int) string { return strconv.Itoa(n) }
