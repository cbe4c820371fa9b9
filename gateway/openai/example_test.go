package openai_test

import (
	"bytes"
	"fmt"

	"github.com/bulkheadhq/bulkhead/gateway/openai"
)

// The proxy's use of the package for one streaming chat request: read the
// request, ask upstream for usage the caller did not ask for, tee the stream
// to the client while dropping that usage chunk again, and record.
func Example() {
	ep, _ := openai.EndpointForPath([]byte("/v1/chat/completions"))
	body := []byte(`{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Hi"}]}`)

	req, err := openai.ParseRequest(ep, body)
	if err != nil {
		fmt.Println(err) // a *RequestError: answer 400
		return
	}
	injected := false
	if req.Stream && !req.IncludeUsage && ep.StreamUsageOptIn() {
		if body, injected, err = openai.WithStreamUsage(body); err != nil {
			fmt.Println(err)
			return
		}
	}
	fmt.Printf("upstream gets %s\n", body)

	tee := openai.AcquireStreamTee(ep, injected, 64<<10)
	defer openai.ReleaseStreamTee(tee)
	upstream := []string{ // as the chunks arrive, split anywhere
		`data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}` + "\n\ndata: {\"choices\":[{\"index\":0,\"de",
		`lta":{"content":"lo"},"finish_reason":"stop"}]}` + "\n\n",
		`data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}` + "\n\n",
		"data: [DONE]\n\n",
	}
	var client bytes.Buffer
	forward := func(b []byte) error { _, err := client.Write(b); return err } // and flush
	for _, chunk := range upstream {
		if err := tee.Write([]byte(chunk), forward); err != nil {
			return // client gone; still record what arrived
		}
	}
	_ = tee.Flush(forward)

	res := tee.Result()
	res.EstimateIfMissing(req.Prompt) // no-op here: upstream reported usage
	fmt.Printf("client got %d events\n", bytes.Count(client.Bytes(), []byte("\n\n")))
	fmt.Printf("record: model=%s text=%q finish=%s tokens=%d/%d/%d (%s)\n", req.Model, res.Text, res.FinishReason,
		res.Usage.PromptTokens, res.Usage.CompletionTokens, res.Usage.TotalTokens, res.Usage.Source)
	// Output:
	// upstream gets {"stream_options":{"include_usage":true},"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Hi"}]}
	// client got 3 events
	// record: model=gpt-4o text="Hello" finish=stop tokens=9/2/11 (upstream)
}
