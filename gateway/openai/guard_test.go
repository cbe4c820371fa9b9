package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

const testSecret = "sk-provider-SECRET-0123456789abcdef"

// escapeAll writes every byte of s as a \u00XX escape.
func escapeAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, `\u%04x`, s[i])
	}
	return b.String()
}

func TestSecretsContainsAndRedact(t *testing.T) {
	s := NewSecrets(testSecret, "", testSecret, "key/with\"quote")
	for _, tc := range []struct {
		in     string
		found  bool
		redact string // Redact's output when found
	}{
		{`{"a":"` + testSecret + `"}`, true, `{"a":"[redacted]"}`},
		{`{"a":"x` + strings.Replace(testSecret, "-", `\u002d`, -1) + `y"}`, true, `{"a":"x[redacted]y"}`},
		{`{"a":"` + escapeAll(testSecret) + `"}`, true, `{"a":"[redacted]"}`},
		{`{"a":"` + strings.Replace(testSecret, "S", `\u0053`, 1) + `", "b":"` + testSecret + `"}`, true, `{"a":"[redacted]", "b":"[redacted]"}`},
		{`{"a":"key\/with\"quote"}`, true, `{"a":"[redacted]"}`},
		{`{"a":"key\u002fwith\u0022quote"}`, true, `{"a":"[redacted]"}`},
		{`{"a":"` + testSecret[:len(testSecret)-1] + `"}`, false, ""},
		{`{"a":"sk\\u002dprovider-SECRET-0123456789abcdef"}`, false, ""}, // an escaped backslash, then the letters u002d
		{`{"a":"caf\u00e9 \ud83d\ude42 \n"}`, false, ""},
	} {
		if got := s.Contains([]byte(tc.in)); got != tc.found {
			t.Errorf("Contains(%s) = %v, want %v", tc.in, got, tc.found)
		}
		out, found := s.Redact([]byte(tc.in))
		if found != tc.found {
			t.Errorf("Redact(%s) found %v, want %v", tc.in, found, tc.found)
		}
		if !found {
			if string(out) != tc.in {
				t.Errorf("Redact(%s) changed it: %s", tc.in, out)
			}
			continue
		}
		if string(out) != tc.redact {
			t.Errorf("Redact(%s) = %s, want %s", tc.in, out, tc.redact)
		}
		if s.Contains(out) || !json.Valid(out) {
			t.Errorf("Redact(%s) = %s: still holds the secret or is not JSON", tc.in, out)
		}
	}
	if text, ok := s.RedactString("a " + testSecret + " b"); !ok || text != "a [redacted] b" {
		t.Errorf("RedactString = %q %v", text, ok)
	}
	var none *Secrets
	if NewSecrets("", "abc", "1234567") != nil || none.Contains([]byte(testSecret)) {
		t.Error("an empty set of secrets finds something")
	}
}

// chatDeltas is a chat stream whose deltas carry the JSON string bodies
// given (escapes as written), then [DONE].
func chatDeltas(deltas ...string) []byte {
	var b bytes.Buffer
	b.WriteString(`data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}` + "\n\n")
	for _, d := range deltas {
		b.WriteString(`data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"` + d + `"}}]}` + "\n\n")
	}
	b.WriteString(`data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\n")
	b.WriteString("data: [DONE]\n\n")
	return b.Bytes()
}

// perChar returns s as one JSON string body per character, each escaped
// by esc.
func perChar(s string, esc func(string) string) []string {
	var out []string
	for i := 0; i < len(s); i++ {
		out = append(out, esc(s[i:i+1]))
	}
	return out
}

func plain(s string) string { return s }

// assembled is the text a client assembles from forwarded chat events.
func assembled(t *testing.T, forwarded []byte) string {
	t.Helper()
	var text strings.Builder
	for _, ev := range strings.Split(string(forwarded), "\n\n") {
		d, ok := strings.CutPrefix(ev, "data: ")
		if !ok || d == "[DONE]" {
			continue
		}
		var c struct {
			Choices []struct {
				Delta struct{ Content string } `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(d), &c); err != nil {
			t.Fatalf("forwarded event %q is not a whole chat chunk: %v", ev, err)
		}
		if len(c.Choices) > 0 {
			text.WriteString(c.Choices[0].Delta.Content)
		}
	}
	return text.String()
}

// feedGuarded writes chunks to a chat tee guarding testSecret and returns
// what it forwarded and the first error.
func feedGuarded(chunks [][]byte) (*StreamTee, []byte, error) {
	tee := NewStreamTee(ChatCompletions, false, 1<<20)
	tee.SetSecrets(NewSecrets("another-configured-key-000", testSecret))
	var r recorder
	var err error
	for _, c := range chunks {
		if werr := tee.Write(c, r.forward); werr != nil && err == nil {
			err = werr
		}
	}
	if ferr := tee.Flush(r.forward); ferr != nil && err == nil {
		err = ferr
	}
	return tee, r.out, err
}

// splits returns input whole, byte by byte, and in random pieces.
func splits(input []byte) map[string][][]byte {
	out := map[string][][]byte{"whole": {input}}
	var bytewise [][]byte
	for i := range input {
		bytewise = append(bytewise, input[i:i+1])
	}
	out["byte by byte"] = bytewise
	rng := rand.New(rand.NewPCG(7, uint64(len(input))))
	for k := range 5 {
		var chunks [][]byte
		for rest := input; len(rest) > 0; {
			n := min(len(rest), 1+rng.IntN(300))
			chunks, rest = append(chunks, rest[:n]), rest[n:]
		}
		out[fmt.Sprint("random ", k)] = chunks
	}
	return out
}

// A stream that would deliver a secret, whole or spread over events, plain
// or escaped, is cut before the event that would complete it; what reaches
// the client holds less than the withholding threshold of the secret's
// start, and the recorded text is what was delivered.
func TestStreamTeeWithholdsSecrets(t *testing.T) {
	const hold = maxHold // testSecret is longer than twice maxHold
	for _, tc := range []struct {
		name  string
		input []byte
	}{
		{"one character per delta", chatDeltas(append([]string{"Your key: "}, perChar(testSecret+" enjoy", plain)...)...)},
		{"one escaped character per delta", chatDeltas(append([]string{"Your key: "}, perChar(testSecret, escapeAll)...)...)},
		{"three characters per delta", chatDeltas("Key ", testSecret[:3], testSecret[3:6], testSecret[6:9], testSecret[9:12],
			testSecret[12:15], testSecret[15:18], testSecret[18:21], testSecret[21:24], testSecret[24:27], testSecret[27:30], testSecret[30:], ".")},
		{"whole in one delta", chatDeltas("Your key is ", testSecret, ".")},
		{"escaped in one delta", chatDeltas("Your key is " + strings.ReplaceAll(testSecret, "-", `\u002d`))},
		{"in another field", bytes.Replace(chatDeltas("hi"), []byte(`"id":"c1"`), []byte(`"id":"`+testSecret+`"`), 2)},
		{"escaped in another field", bytes.Replace(chatDeltas("hi", "there"), []byte(`"object"`),
			[]byte(`"system_fingerprint":"`+escapeAll(testSecret)+`","object"`), 3)},
		{"stream ends inside its start", chatDeltas(append([]string{"Your key: "}, perChar(testSecret[:len(testSecret)-1], plain)...)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for how, chunks := range splits(tc.input) {
				tee, out, err := feedGuarded(chunks)
				if !errors.Is(err, ErrSecret) {
					t.Fatalf("%s: error %v, want ErrSecret", how, err)
				}
				if NewSecrets(testSecret).Contains(out) {
					t.Fatalf("%s: the secret was forwarded: %s", how, out)
				}
				if !bytes.HasPrefix(tc.input, out) || (len(out) > 0 && !bytes.HasSuffix(out, []byte("\n\n"))) {
					t.Fatalf("%s: forwarded %q, not whole events of the input", how, out)
				}
				text := assembled(t, out)
				if strings.Contains(text, testSecret[:hold]) {
					t.Fatalf("%s: the client assembled %q, holding %d bytes of the secret's start", how, text, hold)
				}
				if r := tee.Result(); r.Text != text || r.TextBytes != len(text) {
					t.Fatalf("%s: recorded %q (%d bytes), delivered %q", how, r.Text, r.TextBytes, text)
				}
				var r recorder
				if err := tee.Write([]byte("data: {}\n\n"), r.forward); !errors.Is(err, ErrSecret) || len(r.out) > 0 {
					t.Fatalf("%s: after the cut Write forwarded %q, error %v", how, r.out, err)
				}
			}
		})
	}
}

// Text that only starts like a secret is withheld, then released unchanged
// and in order; without secrets nothing is checked.
func TestStreamTeeReleasesNearMisses(t *testing.T) {
	near := testSecret[:len(testSecret)-1] + "X and " + testSecret[:20]
	input := chatDeltas(append(append([]string{"Looks like "}, perChar(near, plain)...), " ok")...)
	input = append(input, []byte(`data: {"id":"c1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`+"\n\n")...)
	for how, chunks := range splits(input) {
		tee, out, err := feedGuarded(chunks)
		if err != nil || !bytes.Equal(out, input) {
			t.Fatalf("%s: error %v, forwarded\n%q\nwant\n%q", how, err, tail(out), tail(input))
		}
		if r := tee.Result(); r.Text != "Looks like "+near+" ok" || r.Usage.TotalTokens != 3 {
			t.Fatalf("%s: Result %+v", how, r)
		}
	}
	tee := NewStreamTee(ChatCompletions, false, 100)
	in := chatDeltas(testSecret)
	if out := feedChunks(t, tee, [][]byte{in}); !bytes.Equal(out, in) {
		t.Fatal("a tee without secrets changed the stream")
	}
}

// An event too large to parse is checked as bytes, across the pieces it is
// forwarded in.
func TestStreamTeeOversizedSecret(t *testing.T) {
	big := `data: {"pad":"` + strings.Repeat("x", MaxEventBytes) + `","k":"` + testSecret + `"}` + "\n\n"
	cut := strings.Index(big, testSecret) + 5
	for _, chunks := range [][][]byte{
		{[]byte(big)},
		{[]byte(big[:cut]), []byte(big[cut:])},
		{[]byte(big[:MaxEventBytes/2]), []byte(big[MaxEventBytes/2 : cut]), []byte(big[cut:])},
	} {
		_, out, err := feedGuarded(chunks)
		if !errors.Is(err, ErrSecret) || bytes.Contains(out, []byte(testSecret)) {
			t.Fatalf("%d pieces: error %v, forwarded the secret: %v", len(chunks), err, bytes.Contains(out, []byte(testSecret)))
		}
	}
}
