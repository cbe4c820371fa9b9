package gateway

import (
	"context"
	"errors"
	"testing"

	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/azure"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/bulkheadhq/bulkhead/config"
)

// openai-go's Azure client (azure.WithEndpoint, azure.WithAPIKey) works
// against the gateway as against Azure OpenAI: deployment paths, the
// api-key header, api-version. The deployment names the model through
// azure_deployments or by its own name; the record is the /v1 one.
func TestAzureOpenAIGoSDK(t *testing.T) {
	// Loopback: the Azure option sends its key over plain HTTP only to a
	// loopback address, dialled directly.
	h := newFakeHarness(t, loopback{t}, func(c *config.Config) {
		c.AzureDeployments = map[string]string{"prod-chat": "gpt-4o-mini"}
	})
	org, key, _ := h.tenant(1000)
	ctx := context.Background()
	client := oai.NewClient(azure.WithEndpoint(h.url, "2024-10-21"), azure.WithAPIKey(key), azure.WithUnsafeAllowHTTP(), option.WithMaxRetries(0))

	t.Run("chat", func(t *testing.T) {
		c, err := client.Chat.Completions.New(ctx, oai.ChatCompletionNewParams{
			Model:    "prod-chat", // the deployment
			Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage("Say hi")},
		}, option.WithHeader("X-Request-Id", "azure-chat-"+org.String()))
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Choices) != 1 || c.Choices[0].Message.Content == "" || c.Usage.TotalTokens == 0 {
			t.Fatalf("completion %+v", c)
		}
		rec := h.rec.find(t, "azure-chat-"+org.String())
		if rec.OrgID != org || rec.Model != "gpt-4o-mini" || rec.Endpoint != "/v1/chat/completions" || rec.Status != 200 || rec.TotalTokens == 0 {
			t.Errorf("record %+v", rec)
		}
	})

	t.Run("chat stream", func(t *testing.T) {
		stream := client.Chat.Completions.NewStreaming(ctx, oai.ChatCompletionNewParams{
			Model:         "gpt-4o-mini", // a deployment named like its model
			Messages:      []oai.ChatCompletionMessageParamUnion{oai.UserMessage("Say hi")},
			StreamOptions: oai.ChatCompletionStreamOptionsParam{IncludeUsage: oai.Bool(true)},
		})
		var acc oai.ChatCompletionAccumulator
		for stream.Next() {
			acc.AddChunk(stream.Current())
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if len(acc.Choices) != 1 || acc.Choices[0].Message.Content == "" || acc.Usage.TotalTokens == 0 {
			t.Errorf("accumulated %+v", acc.ChatCompletion)
		}
	})

	t.Run("embeddings", func(t *testing.T) {
		e, err := client.Embeddings.New(ctx, oai.EmbeddingNewParams{
			Model: "text-embedding-3-small",
			Input: oai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a", "b"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(e.Data) != 2 || e.Usage.PromptTokens == 0 {
			t.Errorf("embeddings %+v", e)
		}
	})

	t.Run("responses", func(t *testing.T) {
		r, err := client.Responses.New(ctx, responses.ResponseNewParams{
			Model: "gpt-4o-mini",
			Input: responses.ResponseNewParamsInputUnion{OfString: oai.String("Say hi")},
		})
		if err != nil {
			t.Fatal(err)
		}
		if r.OutputText() == "" || r.Usage.TotalTokens == 0 {
			t.Errorf("response %+v", r)
		}
	})

	t.Run("unknown deployment is an unknown model", func(t *testing.T) {
		h2 := newFakeHarness(t, loopback{t}, func(c *config.Config) {
			c.Upstreams = []config.Upstream{{Name: "x", Kind: "openai", URL: c.UpstreamURL, Models: []string{"only"}}}
			c.UpstreamURL = ""
		})
		_, key2, _ := h2.tenant(1000)
		c2 := oai.NewClient(azure.WithEndpoint(h2.url, "2024-10-21"), azure.WithAPIKey(key2), azure.WithUnsafeAllowHTTP(), option.WithMaxRetries(0))
		_, err := c2.Chat.Completions.New(ctx, oai.ChatCompletionNewParams{Model: "nope", Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage("x")}})
		var apiErr *oai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" {
			t.Errorf("err = %v", err)
		}
	})

	t.Run("wrong key", func(t *testing.T) {
		bad := oai.NewClient(azure.WithEndpoint(h.url, "2024-10-21"), azure.WithAPIKey("sk_"+org.String()+"_nope"), azure.WithUnsafeAllowHTTP(), option.WithMaxRetries(0))
		_, err := bad.Chat.Completions.New(ctx, oai.ChatCompletionNewParams{Model: "prod-chat", Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage("x")}})
		var apiErr *oai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 {
			t.Errorf("err = %v", err)
		}
	})
}

// The Azure paths before and around the deployment: what they answer.
func TestAzurePaths(t *testing.T) {
	h := newFakeHarness(t, nil, nil)
	_, key, _ := h.tenant(1000)
	auth := []string{"api-key", key}
	chat := `{"messages":[{"role":"user","content":"hi"}]}`
	for _, tc := range []struct {
		method, path, body string
		want               int
	}{
		{"POST", "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21", chat, 200}, // no model in the body
		{"POST", "/openai/deployments/gpt-4o-mini/chat/completions", `{"model":"other",` + chat[1:], 200},
		{"GET", "/openai/deployments/gpt-4o-mini/chat/completions", "", 405},
		{"POST", "/openai/deployments/a%2Fb/chat/completions", chat, 404},
		{"POST", "/openai/deployments/gpt-4o-mini/images/generations", chat, 404},
		{"POST", "/openai/deployments/gpt-4o-mini/chat/completions", `[1]`, 400},
		{"POST", "/openai/deployments/gpt-4o-mini/chat/completions", `{"model":"a","model":"b","messages":[]}`, 400},
		{"GET", "/openai/models?api-version=2024-10-21", "", 200},
		{"POST", "/openai/nope", chat, 404},
	} {
		r := h.do(tc.method, tc.path, tc.body, auth...)
		if r.status != tc.want {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, r.status, r.body, tc.want)
		}
	}
	// Unauthenticated: 401 before anything about the deployment.
	if r := h.do("POST", "/openai/deployments/nope/chat/completions", chat); r.status != 401 {
		t.Errorf("no key: %d", r.status)
	}
}
