package gateway

import (
	"errors"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/bulkheadhq/bulkhead/gateway/openai"
	"github.com/bulkheadhq/bulkhead/gateway/translate"
)

// OpenAI chat completions for Anthropic models: a /v1/chat/completions
// request whose model routes to an upstream of kind anthropic is
// translated into a Messages request (gateway/translate), sent like a
// native one (same attempts, fallbacks, credential), and its answer,
// stream or error translated back into the chat API's shapes. The record
// is the chat request's (endpoint /v1/chat/completions), with the usage
// Anthropic reported, cache tokens included.

// translated is the state of one translated request.
type translated struct {
	includeUsage bool // the caller's stream_options.include_usage
}

// errStreamTruncated ends a translated stream that ended without its
// message_stop: the caller must not take a cut answer for a whole one.
var errStreamTruncated = &HTTPError{Code: fasthttp.StatusBadGateway, Type: "server_error", ErrCode: "upstream_error",
	Msg: "The upstream provider's stream ended before the answer was complete."}

// errStreamUntranslatable ends a translated stream whose upstream sent an
// event that is not Anthropic's, or an error event.
var errStreamUntranslatable = &HTTPError{Code: fasthttp.StatusBadGateway, Type: "server_error", ErrCode: "upstream_error",
	Msg: "The upstream provider's stream failed or could not be read."}

// translateRequest turns the chat body for a model of up into a Messages
// body, or answers why not: a model of another dialect altogether (404),
// or a member Anthropic cannot honour (400).
func (s *Server) translateRequest(x *exchange, up *upstream, body []byte) (*translated, []byte, error) {
	if x.ep != openai.ChatCompletions || !up.anthropic {
		return nil, nil, wrongDialect(x.ep, x.model)
	}
	t, err := translate.Request(body, translate.Options{DefaultMaxTokens: s.cfg.AnthropicDefaultMaxTokens})
	if err != nil {
		var re *openai.RequestError
		if errors.As(err, &re) {
			return nil, nil, invalidRequest(re)
		}
		return nil, nil, err
	}
	x.wire = openai.Messages
	return &translated{includeUsage: t.IncludeUsage}, t.Body, nil
}

// respondTranslated is respond for a translated request: a Messages
// answer becomes a chat.completion, an Anthropic error an OpenAI one.
func (s *Server) respondTranslated(rc *fasthttp.RequestCtx, x *exchange, up *upstream, resp *fasthttp.Response) error {
	status := resp.StatusCode()
	if status < 200 || status >= 300 && status < 400 || status >= 500 || status == fasthttp.StatusUnauthorized || status == fasthttp.StatusForbidden {
		return s.respond(rc, x, up, resp) // the gateway's own errors, OpenAI-shaped already
	}
	body, err := readUpstreamBody(resp, maxUpstreamBody)
	if err != nil {
		he := upstreamFailure(err)
		x.record(s, he.Code, openai.Result{})
		return he
	}
	if status >= 400 { // the caller's mistake as Anthropic saw it
		he := &HTTPError{Code: status, Type: "invalid_request_error", ErrCode: "upstream_error", Msg: "The upstream provider refused the request."}
		if e, ok := translate.ParseError(body); ok {
			he.Type = e.Type
			if e.Message != "" {
				he.Msg = e.Message
			}
		}
		copyResponseHeaders(&rc.Response.Header, &resp.Header)
		rc.Response.Header.SetContentType("application/json")
		rc.SetStatusCode(status)
		rc.SetBody(s.scrubError(x, &rc.Response.Header, marshalError(he, x.reqID)))
		x.record(s, status, openai.Result{})
		return nil
	}
	res := openai.ParseResponse(openai.Messages, body, s.cfg.CaptureMaxBytes)
	out, ok := translate.Response(body, time.Now().Unix())
	if !ok {
		x.record(s, fasthttp.StatusBadGateway, openai.Result{})
		return withCause(errUpstream, errors.New("upstream "+up.name+" answered a body that is not a Messages answer"))
	}
	copyResponseHeaders(&rc.Response.Header, &resp.Header)
	rc.Response.Header.SetContentType("application/json")
	out = s.scrubResponse(x, &rc.Response.Header, out, &res)
	rc.SetStatusCode(status)
	rc.SetBody(out)
	x.record(s, status, res)
	return nil
}

// translateEvents is the stream's forward function when it is
// translated: the complete Messages events ev become chat chunks in b.out.
func (b *sseBody) translateEvents(ev []byte) error {
	var err error
	b.out, err = b.conv.Events(b.out, ev)
	if err != nil && b.convErr == nil {
		b.convErr = err
	}
	return err
}
