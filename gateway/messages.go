package gateway

import (
	"encoding/json"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/gateway/openai"
)

// Anthropic's Messages API, POST /v1/messages, for models routed to an
// upstream of kind anthropic: the same credentials, limits, routing,
// fallbacks and record as the OpenAI endpoints (proxy.go), the body
// forwarded as sent, usage read from the answer or from the stream's
// message_start and message_delta events. Its errors are Anthropic's shape,
// {"type":"error","error":{"type","message"},"request_id"}, so that
// Anthropic's SDKs raise them as API errors.

// wrongDialect answers a request whose model routes to an upstream that
// does not speak its endpoint's API.
func wrongDialect(ep openai.Endpoint, model string) *HTTPError {
	e := *errModelNotFound
	if validModelID(model) {
		e.Msg = "The model '" + model + "' is not served on " + ep.Path()
	} else {
		e.Msg = "The model is not served on " + ep.Path()
	}
	if ep == openai.Messages {
		e.Msg += ": it is not an Anthropic model."
	} else {
		e.Msg += ": it is an Anthropic model, served on /v1/messages."
	}
	return &e
}

// anthropicErrorType is the Anthropic error type of an HTTP status.
func anthropicErrorType(code int) string {
	switch code {
	case fasthttp.StatusBadRequest, fasthttp.StatusMethodNotAllowed, fasthttp.StatusRequestTimeout, fasthttp.StatusRequestHeaderFieldsTooLarge:
		return "invalid_request_error"
	case fasthttp.StatusUnauthorized:
		return "authentication_error"
	case fasthttp.StatusForbidden:
		return "permission_error"
	case fasthttp.StatusNotFound:
		return "not_found_error"
	case fasthttp.StatusRequestEntityTooLarge:
		return "request_too_large"
	case fasthttp.StatusTooManyRequests:
		return "rate_limit_error"
	case fasthttp.StatusServiceUnavailable, 529:
		return "overloaded_error"
	case fasthttp.StatusGatewayTimeout:
		return "timeout_error"
	}
	return "api_error"
}

// anthropicErrorBody is Anthropic's error object, plus the request id.
type anthropicErrorBody struct {
	Type  string `json:"type"` // "error"
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
	RequestID string `json:"request_id"`
}

func marshalAnthropicError(he *HTTPError, reqID string) []byte {
	var b anthropicErrorBody
	b.Type = "error"
	b.Error.Type = anthropicErrorType(he.Code)
	b.Error.Message = he.Msg + " (request id: " + reqID + ")"
	if he.Param != "" {
		b.Error.Message = he.Param + ": " + b.Error.Message
	}
	b.RequestID = reqID
	out, _ := json.Marshal(b) // cannot fail: strings only
	return out
}

// writeAnthropicError is writeError in Anthropic's shape.
func (s *Server) writeAnthropicError(rc *fasthttp.RequestCtx, reqID string, err error) {
	he := toHTTPError(err)
	if he.Code >= 500 && he.Code != statusClientClosed {
		s.log.Error("request failed", zap.String("request_id", reqID), zap.Int("status", he.Code), zap.Error(he.Err))
	}
	rc.Response.Header.SetContentType("application/json")
	rc.SetStatusCode(he.Code)
	rc.SetBody(marshalAnthropicError(he, reqID))
}

// anthropicStreamErrorEvent ends a Messages stream with an error event, as
// Anthropic's own streams do.
func anthropicStreamErrorEvent(reqID string, he *HTTPError) []byte {
	return append(append([]byte("event: error\ndata: "), marshalAnthropicError(he, reqID)...), "\n\n"...)
}
