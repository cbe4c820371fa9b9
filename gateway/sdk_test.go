package gateway

import (
	"context"
	"errors"
	"testing"

	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/bulkheadhq/bulkhead/config"
)

// The official Go SDK works against the gateway by changing only its base
// URL: the compatibility promise.
func TestOpenAIGoSDK(t *testing.T) {
	h := newHarness(t, nil)
	org, key, _ := h.tenant(1000)
	ctx := context.Background()
	client := oai.NewClient(option.WithBaseURL(h.url+"/v1/"), option.WithAPIKey(key), option.WithMaxRetries(0))

	t.Run("chat", func(t *testing.T) {
		c, err := client.Chat.Completions.New(ctx, oai.ChatCompletionNewParams{
			Model:    "gpt-4o-mini",
			Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage("Say hi")},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Choices) != 1 || c.Choices[0].Message.Content == "" || c.Usage.TotalTokens == 0 {
			t.Errorf("completion %+v", c)
		}
	})

	t.Run("chat stream", func(t *testing.T) {
		stream := client.Chat.Completions.NewStreaming(ctx, oai.ChatCompletionNewParams{
			Model:         "gpt-4o-mini",
			Messages:      []oai.ChatCompletionMessageParamUnion{oai.UserMessage("Say hi")},
			StreamOptions: oai.ChatCompletionStreamOptionsParam{IncludeUsage: oai.Bool(true)},
		})
		var acc oai.ChatCompletionAccumulator
		chunks := 0
		for stream.Next() {
			acc.AddChunk(stream.Current())
			chunks++
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if chunks < 3 || len(acc.Choices) != 1 || acc.Choices[0].Message.Content == "" || acc.Usage.TotalTokens == 0 {
			t.Errorf("%d chunks, accumulated %+v", chunks, acc.ChatCompletion)
		}
	})

	t.Run("stream without usage asked", func(t *testing.T) {
		stream := client.Chat.Completions.NewStreaming(ctx, oai.ChatCompletionNewParams{
			Model:    "gpt-4o-mini",
			Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage("Say hi")},
		})
		var acc oai.ChatCompletionAccumulator
		for stream.Next() {
			acc.AddChunk(stream.Current())
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if acc.Usage.TotalTokens != 0 || acc.Choices[0].Message.Content == "" {
			t.Errorf("the caller got usage it did not ask for, or no text: %+v", acc.ChatCompletion)
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
		if len(e.Data) != 2 || len(e.Data[0].Embedding) == 0 || e.Usage.PromptTokens == 0 {
			t.Errorf("embeddings %+v", e)
		}
	})

	t.Run("errors surface as API errors", func(t *testing.T) {
		bad := oai.NewClient(option.WithBaseURL(h.url+"/v1/"), option.WithAPIKey("sk_"+org.String()+"_nope"), option.WithMaxRetries(0))
		params := oai.ChatCompletionNewParams{Model: "gpt-4o-mini", Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage("x")}}
		for name, tc := range map[string]struct {
			call func() error
			want int
		}{
			"401": {func() error { _, err := bad.Chat.Completions.New(ctx, params); return err }, 401},
			"502": {func() error {
				_, err := client.Chat.Completions.New(ctx, params, option.WithHeader("X-Stainless-Mock-Status", "500"))
				return err
			}, 502},
		} {
			var apiErr *oai.Error
			if err := tc.call(); !errors.As(err, &apiErr) || apiErr.StatusCode != tc.want {
				t.Errorf("%s: err = %v", name, err)
			}
		}
	})

	t.Run("429 over the key's limit", func(t *testing.T) {
		limited, _ := h.key(org, 1)
		c := oai.NewClient(option.WithBaseURL(h.url+"/v1/"), option.WithAPIKey(limited), option.WithMaxRetries(0))
		params := oai.ChatCompletionNewParams{Model: "gpt-4o-mini", Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage("x")}}
		if _, err := c.Chat.Completions.New(ctx, params); err != nil {
			t.Fatal(err)
		}
		_, err := c.Chat.Completions.New(ctx, params)
		var apiErr *oai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 429 || apiErr.Code != "rate_limit_exceeded" {
			t.Errorf("err = %v", err)
		}
	})

	t.Run("404 for an unserved model", func(t *testing.T) {
		h2 := newHarness(t, func(c *config.Config) {
			c.Upstreams = []config.Upstream{{Name: "x", Kind: "openai", URL: c.UpstreamURL, Models: []string{"only"}}}
			c.UpstreamURL = ""
		})
		_, key2, _ := h2.tenant(1000)
		c2 := oai.NewClient(option.WithBaseURL(h2.url+"/v1/"), option.WithAPIKey(key2), option.WithMaxRetries(0))
		_, err := c2.Chat.Completions.New(ctx, oai.ChatCompletionNewParams{Model: "gpt-4o-mini", Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage("x")}})
		var apiErr *oai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" {
			t.Errorf("err = %v", err)
		}
	})
}
