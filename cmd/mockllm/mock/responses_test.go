package mock

import (
	"encoding/json"
	"strings"
	"testing"
)

// responseObject is a Responses API response.
type responseObject struct {
	ID        string `json:"id"`
	Object    string `json:"object"`
	CreatedAt int64  `json:"created_at"`
	Status    string `json:"status"`
	Model     string `json:"model"`
	Output    []struct {
		Type    string `json:"type"`
		Role    string `json:"role"`
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
	} `json:"output"`
	Usage *struct {
		InputTokens  int `json:"input_tokens"`
		OutputTokens int `json:"output_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
}

// outputText returns the text of the single output_text part.
func (r responseObject) outputText(t *testing.T) string {
	t.Helper()
	if len(r.Output) != 1 || r.Output[0].Type != "message" || r.Output[0].Role != "assistant" ||
		len(r.Output[0].Content) != 1 || r.Output[0].Content[0].Type != "output_text" {
		t.Fatalf("output %+v, want one assistant message with one output_text", r.Output)
	}
	return r.Output[0].Content[0].Text
}

func TestResponses(t *testing.T) {
	tests := []struct {
		name   string
		fields string
		input  int
	}{
		// "abcdefghij" = 10 chars → 3, + 4 for the one item.
		{"string input", `"input":"abcdefghij"`, 3 + 4},
		{"message items", `"input":[{"role":"user","content":"abcd"},{"role":"user","content":[{"type":"input_text","text":"efgh"}]}]`, 2 + 8},
		{"instructions", `"instructions":"abcd","input":"efgh"`, 2 + 8},
	}
	ts := newTestServer(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := `{"model":"gpt-4o",` + tt.fields
			resp := decode[responseObject](t, ts.post("/v1/responses", req+`}`, 200).body)
			if !strings.HasPrefix(resp.ID, "resp_mock") || resp.Object != "response" || resp.Status != "completed" ||
				resp.Model != "gpt-4o" || resp.CreatedAt == 0 {
				t.Errorf("envelope %+v", resp)
			}
			text := resp.outputText(t)
			words := len(strings.Fields(text))
			if u := resp.Usage; u == nil || u.InputTokens != tt.input || u.OutputTokens != words || u.TotalTokens != tt.input+words {
				t.Errorf("usage %+v, want input %d output %d", u, tt.input, words)
			}

			evs := parseSSE(t, ts.post("/v1/responses", req+`,"stream":true}`, 200).body)
			var names []string
			var deltas strings.Builder
			for i, ev := range evs {
				payload := decode[map[string]json.RawMessage](t, ev.data)
				var typ string
				var seq int
				if err := json.Unmarshal(payload["type"], &typ); err != nil || typ != ev.name {
					t.Errorf("event %d: type %s does not match event name %q", i, payload["type"], ev.name)
				}
				if err := json.Unmarshal(payload["sequence_number"], &seq); err != nil || seq != i {
					t.Errorf("event %d: sequence_number %s", i, payload["sequence_number"])
				}
				if ev.name == "response.output_text.delta" {
					var d string
					if err := json.Unmarshal(payload["delta"], &d); err != nil {
						t.Fatalf("delta %s: %v", payload["delta"], err)
					}
					deltas.WriteString(d)
					if len(names) > 0 && names[len(names)-1] == ev.name {
						continue // collapse the run of deltas
					}
				}
				names = append(names, ev.name)
			}
			want := "response.created response.in_progress response.output_item.added response.content_part.added " +
				"response.output_text.delta response.output_text.done response.content_part.done " +
				"response.output_item.done response.completed"
			if got := strings.Join(names, " "); got != want {
				t.Errorf("events\n%s\nwant\n%s", got, want)
			}
			if deltas.String() != text {
				t.Errorf("deltas %q, want %q", deltas.String(), text)
			}
			completed := decode[struct {
				Response responseObject `json:"response"`
			}](t, evs[len(evs)-1].data).Response
			if completed.Status != "completed" || completed.outputText(t) != text {
				t.Errorf("response.completed carries %+v", completed)
			}
			if u := completed.Usage; u == nil || *u != *resp.Usage {
				t.Errorf("response.completed usage %+v, want %+v", u, resp.Usage)
			}
			created := decode[struct {
				Response responseObject `json:"response"`
			}](t, evs[0].data).Response
			if created.Status != "in_progress" || created.Usage != nil || created.ID != completed.ID {
				t.Errorf("response.created carries %+v", created)
			}
		})
	}
}
