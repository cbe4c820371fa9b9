// Package translate serves OpenAI chat completions from Anthropic's
// Messages API: it turns a /v1/chat/completions body into a /v1/messages
// body (Request), a Messages answer into a chat.completion (Response), and
// a Messages event stream into chat.completion.chunk events (Stream).
//
// It decodes into typed structs (encoding/json, no map[string]any) and
// writes its output by appending, so the cost per request is one decode of
// the caller's body, one encode of the upstream's, and one small decode per
// stream event.
//
// What cannot be translated is refused with a *openai.RequestError naming
// the member (400), never dropped silently: n > 1, logprobs, logit_bias,
// penalties, seed, response_format other than text, audio, the legacy
// functions, reasoning_effort, and content parts Anthropic has no equivalent for.
package translate

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	"github.com/bulkheadhq/bulkhead/gateway/openai"
)

// chatRequest is what Request reads of an OpenAI chat completions body.
// Members it does not name are ignored, as OpenAI-compatible servers do;
// the ones below that Anthropic cannot honour are refused (refuse).
type chatRequest struct {
	Model               string          `json:"model"`
	Messages            []chatMessage   `json:"messages"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Temperature         *float64        `json:"temperature"`
	TopP                *float64        `json:"top_p"`
	Stop                json.RawMessage `json:"stop"`
	Stream              bool            `json:"stream"`
	StreamOptions       *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	Tools             []chatTool      `json:"tools"`
	ToolChoice        json.RawMessage `json:"tool_choice"`
	ParallelToolCalls *bool           `json:"parallel_tool_calls"`
	User              string          `json:"user"`

	// Refused when set to anything but their neutral value.
	N                *int            `json:"n"`
	Logprobs         *bool           `json:"logprobs"`
	TopLogprobs      *int            `json:"top_logprobs"`
	LogitBias        json.RawMessage `json:"logit_bias"`
	FrequencyPenalty *float64        `json:"frequency_penalty"`
	PresencePenalty  *float64        `json:"presence_penalty"`
	Seed             json.RawMessage `json:"seed"`
	ResponseFormat   *struct {
		Type string `json:"type"`
	} `json:"response_format"`
	Audio        json.RawMessage `json:"audio"`
	Modalities   json.RawMessage `json:"modalities"`
	Prediction   json.RawMessage `json:"prediction"`
	Functions    json.RawMessage `json:"functions"`
	FunctionCall json.RawMessage `json:"function_call"`
	WebSearch    json.RawMessage `json:"web_search_options"`
	Reasoning    json.RawMessage `json:"reasoning_effort"`
}

type chatMessage struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"` // a string, an array of parts, or null
	ToolCalls  []chatToolCall  `json:"tool_calls"`
	ToolCallID string          `json:"tool_call_id"`
}

type chatPart struct {
	Type     string `json:"type"`
	Text     string `json:"text"`
	Refusal  string `json:"refusal"`
	ImageURL *struct {
		URL string `json:"url"`
	} `json:"image_url"`
}

type chatToolCall struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

type chatTool struct {
	Type     string `json:"type"`
	Function struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Parameters  json.RawMessage `json:"parameters"`
	} `json:"function"`
}

// msgRequest is the Messages body Request writes.
type msgRequest struct {
	Model         string         `json:"model"`
	MaxTokens     int            `json:"max_tokens"`
	System        []block        `json:"system,omitempty"`
	Messages      []msgMessage   `json:"messages"`
	Temperature   *float64       `json:"temperature,omitempty"`
	TopP          *float64       `json:"top_p,omitempty"`
	StopSequences []string       `json:"stop_sequences,omitempty"`
	Stream        bool           `json:"stream,omitempty"`
	Tools         []msgTool      `json:"tools,omitempty"`
	ToolChoice    *msgToolChoice `json:"tool_choice,omitempty"`
	Metadata      *msgMetadata   `json:"metadata,omitempty"`
}

type msgMetadata struct {
	UserID string `json:"user_id"`
}

type msgMessage struct {
	Role    string  `json:"role"`
	Content []block `json:"content"`
}

// block is one Messages content block: text, image, tool_use or
// tool_result (whose content is text blocks).
type block struct {
	Type      string          `json:"type"`
	Text      string          `json:"text,omitempty"`
	Source    *imageSource    `json:"source,omitempty"`
	ID        string          `json:"id,omitempty"`
	Name      string          `json:"name,omitempty"`
	Input     json.RawMessage `json:"input,omitempty"`
	ToolUseID string          `json:"tool_use_id,omitempty"`
	Content   []block         `json:"content,omitempty"`
}

type imageSource struct {
	Type      string `json:"type"` // "base64" or "url"
	MediaType string `json:"media_type,omitempty"`
	Data      string `json:"data,omitempty"`
	URL       string `json:"url,omitempty"`
}

type msgTool struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	InputSchema json.RawMessage `json:"input_schema"`
}

type msgToolChoice struct {
	Type                   string `json:"type"` // auto, any, tool, none
	Name                   string `json:"name,omitempty"`
	DisableParallelToolUse bool   `json:"disable_parallel_tool_use,omitempty"`
}

// Options are the choices Request leaves to the gateway's configuration.
type Options struct {
	// DefaultMaxTokens is the max_tokens sent when the caller sets neither
	// max_tokens nor max_completion_tokens: Anthropic requires one, OpenAI
	// does not. It must be positive.
	DefaultMaxTokens int
}

// Translated is a chat request turned into a Messages request.
type Translated struct {
	Body         []byte // the Messages body to send upstream
	Stream       bool
	IncludeUsage bool // the caller asked for stream_options.include_usage
}

// emptySchema is the input_schema of a function tool without parameters.
var emptySchema = json.RawMessage(`{"type":"object","properties":{}}`)

// Request translates the chat completions body into a Messages body. The
// body has passed openai.ParseRequest (valid JSON, one model, no
// case-folded duplicates); what Anthropic cannot honour is refused with a
// *openai.RequestError.
func Request(body []byte, opt Options) (Translated, error) {
	var in chatRequest
	if err := json.Unmarshal(body, &in); err != nil {
		return Translated{}, &openai.RequestError{Msg: "request body does not match the chat completions schema: " + jsonErrMsg(err)}
	}
	if err := refuse(&in); err != nil {
		return Translated{}, err
	}
	out := msgRequest{Model: in.Model, MaxTokens: opt.DefaultMaxTokens, Temperature: in.Temperature, TopP: in.TopP, Stream: in.Stream}
	switch {
	case in.MaxCompletionTokens != nil:
		out.MaxTokens = *in.MaxCompletionTokens
	case in.MaxTokens != nil:
		out.MaxTokens = *in.MaxTokens
	}
	if out.MaxTokens < 1 {
		return Translated{}, &openai.RequestError{Param: "max_tokens", Msg: "must be at least 1"}
	}
	if in.Temperature != nil && (*in.Temperature < 0 || *in.Temperature > 1) {
		return Translated{}, &openai.RequestError{Param: "temperature", Msg: "must be between 0 and 1 for an Anthropic model"}
	}
	var err error
	if out.StopSequences, err = stops(in.Stop); err != nil {
		return Translated{}, err
	}
	if out.System, out.Messages, err = messages(in.Messages); err != nil {
		return Translated{}, err
	}
	if out.Tools, err = tools(in.Tools); err != nil {
		return Translated{}, err
	}
	if out.ToolChoice, err = toolChoice(in.ToolChoice, in.ParallelToolCalls); err != nil {
		return Translated{}, err
	}
	if in.User != "" {
		out.Metadata = &msgMetadata{UserID: in.User}
	}
	b, err := json.Marshal(&out)
	if err != nil { // raw members came from a valid body: cannot happen
		return Translated{}, &openai.RequestError{Msg: "request cannot be translated for an Anthropic model"}
	}
	t := Translated{Body: b, Stream: in.Stream}
	if in.StreamOptions != nil {
		t.IncludeUsage = in.StreamOptions.IncludeUsage
	}
	return t, nil
}

// jsonErrMsg names where the body does not fit the schema, without
// quoting its content.
func jsonErrMsg(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return "'" + te.Field + "' must be " + te.Type.String()
	}
	return "a member has the wrong type"
}

// unsupported is the 400 of a member Anthropic's API cannot honour.
func unsupported(param string) error {
	return &openai.RequestError{Param: param, Msg: "'" + param + "' is not supported for an Anthropic model"}
}

// isNull reports a member absent or null.
func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

// refuse returns the 400 of the first member set that Anthropic cannot
// honour; neutral values (n 1, logprobs false, zero penalties, text
// format) pass.
func refuse(in *chatRequest) error {
	switch {
	case in.N != nil && *in.N != 1:
		return unsupported("n")
	case in.Logprobs != nil && *in.Logprobs:
		return unsupported("logprobs")
	case in.TopLogprobs != nil && *in.TopLogprobs != 0:
		return unsupported("top_logprobs")
	case !isNull(in.LogitBias) && string(in.LogitBias) != "{}":
		return unsupported("logit_bias")
	case in.FrequencyPenalty != nil && *in.FrequencyPenalty != 0:
		return unsupported("frequency_penalty")
	case in.PresencePenalty != nil && *in.PresencePenalty != 0:
		return unsupported("presence_penalty")
	case !isNull(in.Seed):
		return unsupported("seed")
	case in.ResponseFormat != nil && in.ResponseFormat.Type != "text":
		return unsupported("response_format")
	case !isNull(in.Audio):
		return unsupported("audio")
	case !isNull(in.Modalities) && string(in.Modalities) != `["text"]`:
		return unsupported("modalities")
	case !isNull(in.Prediction):
		return unsupported("prediction")
	case !isNull(in.Functions):
		return &openai.RequestError{Param: "functions", Msg: "'functions' is not supported for an Anthropic model; use 'tools'"}
	case !isNull(in.FunctionCall):
		return &openai.RequestError{Param: "function_call", Msg: "'function_call' is not supported for an Anthropic model; use 'tool_choice'"}
	case !isNull(in.WebSearch):
		return unsupported("web_search_options")
	case !isNull(in.Reasoning):
		return &openai.RequestError{Param: "reasoning_effort", Msg: "'reasoning_effort' is not supported for an Anthropic model; ask for extended thinking on /v1/messages"}
	}
	return nil
}

// stops reads "stop": a string or an array of strings.
func stops(raw json.RawMessage) ([]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}, nil
	}
	var many []string
	if json.Unmarshal(raw, &many) != nil {
		return nil, &openai.RequestError{Param: "stop", Msg: "must be a string or an array of strings"}
	}
	return many, nil
}

// messages translates the conversation: system and developer messages
// become the system prompt (in order, wherever they stand: Anthropic has
// one), tool results user turns of tool_result blocks, and consecutive
// turns of one role are merged, as Anthropic wants roles to alternate.
func messages(in []chatMessage) ([]block, []msgMessage, error) {
	var system []block
	out := make([]msgMessage, 0, len(in))
	for i := range in {
		m := &in[i]
		param := "messages[" + strconv.Itoa(i) + "]"
		var role string
		var blocks []block
		var err error
		switch m.Role {
		case "system", "developer":
			blocks, err = content(m.Content, param, false)
			if err != nil {
				return nil, nil, err
			}
			system = append(system, blocks...)
			continue
		case "user":
			role = "user"
			blocks, err = content(m.Content, param, true)
		case "assistant":
			role = "assistant"
			blocks, err = assistant(m, param)
		case "tool":
			role = "user"
			var res []block
			if res, err = content(m.Content, param, false); err == nil {
				if m.ToolCallID == "" {
					return nil, nil, &openai.RequestError{Param: param + ".tool_call_id", Msg: "a tool message needs its tool_call_id"}
				}
				blocks = []block{{Type: "tool_result", ToolUseID: m.ToolCallID, Content: res}}
			}
		default:
			return nil, nil, &openai.RequestError{Param: param + ".role", Msg: "role '" + m.Role + "' is not supported for an Anthropic model"}
		}
		if err != nil {
			return nil, nil, err
		}
		if len(blocks) == 0 {
			continue
		}
		if n := len(out); n > 0 && out[n-1].Role == role {
			out[n-1].Content = append(out[n-1].Content, blocks...)
		} else {
			out = append(out, msgMessage{Role: role, Content: blocks})
		}
	}
	if len(out) == 0 {
		return nil, nil, &openai.RequestError{Param: "messages", Msg: "an Anthropic model needs at least one user or assistant message"}
	}
	return system, out, nil
}

// assistant translates an assistant turn: its text, then a tool_use block
// per tool call.
func assistant(m *chatMessage, param string) ([]block, error) {
	blocks, err := content(m.Content, param, false)
	if err != nil {
		return nil, err
	}
	for j, tc := range m.ToolCalls {
		p := param + ".tool_calls[" + strconv.Itoa(j) + "]"
		if tc.Type != "" && tc.Type != "function" {
			return nil, &openai.RequestError{Param: p + ".type", Msg: "only function tool calls are supported for an Anthropic model"}
		}
		input := json.RawMessage(tc.Function.Arguments)
		if len(bytes.TrimSpace(input)) == 0 {
			input = json.RawMessage("{}")
		}
		if !json.Valid(input) || bytes.TrimSpace(input)[0] != '{' {
			return nil, &openai.RequestError{Param: p + ".function.arguments", Msg: "must be a JSON object for an Anthropic model"}
		}
		blocks = append(blocks, block{Type: "tool_use", ID: tc.ID, Name: tc.Function.Name, Input: input})
	}
	return blocks, nil
}

// content translates a message's content: a string, or an array of parts
// (text, and for user turns images). Empty text is left out: Anthropic
// refuses empty text blocks.
func content(raw json.RawMessage, param string, images bool) ([]block, error) {
	if isNull(raw) {
		return nil, nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, &openai.RequestError{Param: param + ".content", Msg: "must be a string or an array of content parts"}
		}
		if s == "" {
			return nil, nil
		}
		return []block{{Type: "text", Text: s}}, nil
	}
	var parts []chatPart
	if err := json.Unmarshal(raw, &parts); err != nil {
		return nil, &openai.RequestError{Param: param + ".content", Msg: "must be a string or an array of content parts"}
	}
	out := make([]block, 0, len(parts))
	for k, p := range parts {
		pp := param + ".content[" + strconv.Itoa(k) + "]"
		switch {
		case p.Type == "text" && p.Text != "":
			out = append(out, block{Type: "text", Text: p.Text})
		case p.Type == "text":
		case p.Type == "refusal" && p.Refusal != "":
			out = append(out, block{Type: "text", Text: p.Refusal})
		case p.Type == "image_url" && images && p.ImageURL != nil:
			src, err := image(p.ImageURL.URL, pp+".image_url.url")
			if err != nil {
				return nil, err
			}
			out = append(out, block{Type: "image", Source: src})
		default:
			return nil, &openai.RequestError{Param: pp + ".type", Msg: "content part '" + p.Type + "' is not supported here for an Anthropic model"}
		}
	}
	return out, nil
}

// imageTypes are the media types Anthropic accepts for images.
var imageTypes = map[string]bool{"image/jpeg": true, "image/png": true, "image/gif": true, "image/webp": true}

// image translates an image_url: a base64 data URL of a type Anthropic
// takes, or an https URL (Anthropic fetches it; the gateway never does).
func image(url, param string) (*imageSource, error) {
	if rest, ok := strings.CutPrefix(url, "data:"); ok {
		meta, data, ok := strings.Cut(rest, ",")
		mediaType, isB64 := strings.CutSuffix(meta, ";base64")
		if !ok || !isB64 || !imageTypes[mediaType] {
			return nil, &openai.RequestError{Param: param, Msg: "a data URL must be base64 image/jpeg, image/png, image/gif or image/webp for an Anthropic model"}
		}
		if _, err := base64.StdEncoding.DecodeString(data); err != nil {
			return nil, &openai.RequestError{Param: param, Msg: "the data URL is not valid base64"}
		}
		return &imageSource{Type: "base64", MediaType: mediaType, Data: data}, nil
	}
	if strings.HasPrefix(url, "https://") {
		return &imageSource{Type: "url", URL: url}, nil
	}
	return nil, &openai.RequestError{Param: param, Msg: "must be an https URL or a base64 data URL for an Anthropic model"}
}

// tools translates function tools to Anthropic's client tools.
func tools(in []chatTool) ([]msgTool, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make([]msgTool, len(in))
	for i, t := range in {
		if t.Type != "function" {
			return nil, &openai.RequestError{Param: "tools[" + strconv.Itoa(i) + "].type", Msg: "only function tools are supported for an Anthropic model"}
		}
		schema := t.Function.Parameters
		if isNull(schema) {
			schema = emptySchema
		}
		out[i] = msgTool{Name: t.Function.Name, Description: t.Function.Description, InputSchema: schema}
	}
	return out, nil
}

// toolChoice translates tool_choice ("auto", "none", "required", or a
// named function) and parallel_tool_calls false.
func toolChoice(raw json.RawMessage, parallel *bool) (*msgToolChoice, error) {
	noParallel := parallel != nil && !*parallel
	if isNull(raw) {
		if noParallel {
			return &msgToolChoice{Type: "auto", DisableParallelToolUse: true}, nil
		}
		return nil, nil
	}
	var c msgToolChoice
	var mode string
	if json.Unmarshal(raw, &mode) == nil {
		switch mode {
		case "auto":
			c.Type = "auto"
		case "none":
			c.Type = "none"
		case "required":
			c.Type = "any"
		default:
			return nil, &openai.RequestError{Param: "tool_choice", Msg: "must be auto, none, required or a named function"}
		}
	} else {
		var named struct {
			Type     string `json:"type"`
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		if json.Unmarshal(raw, &named) != nil || named.Type != "function" || named.Function.Name == "" {
			return nil, &openai.RequestError{Param: "tool_choice", Msg: "must be auto, none, required or a named function"}
		}
		c.Type, c.Name = "tool", named.Function.Name
	}
	c.DisableParallelToolUse = noParallel && c.Type != "none"
	return &c, nil
}
