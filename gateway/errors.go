package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/gateway/openai"
	"github.com/bulkheadhq/bulkhead/ratelimit"
)

// HTTPError is an error with what the client may see kept apart from what
// only the log may see. Code is the HTTP status; Type and ErrCode fill the
// OpenAI error body; Msg is shown to the client; Err is logged, never shown.
type HTTPError struct {
	Code    int
	Type    string // OpenAI error type, e.g. "invalid_request_error"
	ErrCode string // OpenAI error code, e.g. "invalid_api_key"; may be empty
	Msg     string
	Param   string // the offending request parameter, if one is to blame
	Err     error
}

func (e *HTTPError) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *HTTPError) Unwrap() error { return e.Err }

// withCause returns a copy of e that carries cause for the log.
func withCause(e *HTTPError, cause error) *HTTPError {
	c := *e
	c.Err = cause
	return &c
}

// The errors the gateway answers with, all in this file: the values and
// constructors below and toHTTPError's answers to context errors. Each
// value is shared: wrap it with Err set through withCause, never mutate it.

// Routing and the server's own failures.
var (
	errNotFound         = &HTTPError{Code: fasthttp.StatusNotFound, Type: "invalid_request_error", ErrCode: "not_found", Msg: "Unknown request URL. Please check the URL and method."}
	errMethodNotAllowed = &HTTPError{Code: fasthttp.StatusMethodNotAllowed, Type: "invalid_request_error", ErrCode: "method_not_allowed", Msg: "Method not allowed for this URL."}
	errInternal         = &HTTPError{Code: fasthttp.StatusInternalServerError, Type: "server_error", ErrCode: "internal_error", Msg: "The gateway failed to handle the request. Quote the request id when reporting it."}
)

// Requests fasthttp could not parse (handleParseError).
var (
	errHeadersTooLarge = &HTTPError{Code: fasthttp.StatusRequestHeaderFieldsTooLarge, Type: "invalid_request_error", ErrCode: "headers_too_large",
		Msg: "Request headers are too large."}
	errRequestTimeout = &HTTPError{Code: fasthttp.StatusRequestTimeout, Type: "invalid_request_error", ErrCode: "request_timeout",
		Msg: "The request was not received in time."}
	errNotHTTP = &HTTPError{Code: fasthttp.StatusBadRequest, Type: "invalid_request_error", ErrCode: "bad_request",
		Msg: "The request is not valid HTTP."}
)

// bodyTooLarge answers a body over limit bytes (BULKHEAD_MAX_REQUEST_BODY_BYTES).
func bodyTooLarge(limit int) *HTTPError {
	return &HTTPError{Code: fasthttp.StatusRequestEntityTooLarge, Type: "invalid_request_error", ErrCode: "request_too_large",
		Msg: "Request body exceeds the limit of " + strconv.Itoa(limit) + " bytes."}
}

// Credentials (credential.go). Every invalid credential gets the same 401
// body, whatever the reason (unknown, revoked, expired, wrong organization,
// bad checksum).
var (
	errInvalidKey = &HTTPError{Code: fasthttp.StatusUnauthorized, Type: "invalid_request_error", ErrCode: "invalid_api_key",
		Msg: "Incorrect API key provided."}
	errMissingKey = &HTTPError{Code: fasthttp.StatusUnauthorized, Type: "invalid_request_error", ErrCode: "invalid_api_key",
		Msg: "You didn't provide an API key. Send it as 'Authorization: Bearer KEY' (or in an 'api-key' or 'x-api-key' header)."}
	errConflictingKeys = &HTTPError{Code: fasthttp.StatusUnauthorized, Type: "invalid_request_error", ErrCode: "invalid_api_key",
		Msg: "The request carries more than one different credential; send exactly one."}
	errAuthUnavailable = &HTTPError{Code: fasthttp.StatusServiceUnavailable, Type: "server_error", ErrCode: "auth_unavailable",
		Msg: "The API key cannot be verified right now; retry shortly."}
)

// authThrottled answers a caller whose address or organization spent its
// budget of failed authentications; secs is the Retry-After value.
func authThrottled(secs string, cause error) *HTTPError {
	return &HTTPError{Code: fasthttp.StatusTooManyRequests, Type: "requests", ErrCode: "auth_rate_limited",
		Msg: "Too many failed authentication attempts. Retry after " + secs + "s.", Err: cause}
}

// Rate limits (admission.go).
var errLimiterUnavailable = &HTTPError{Code: fasthttp.StatusServiceUnavailable, Type: "server_error", ErrCode: "rate_limiter_unavailable",
	Msg: "Rate limits cannot be checked right now; retry shortly."}

// rateLimited answers a request refused by the principal's budget of
// which ("requests" or "tokens"), limit per minute.
func rateLimited(which string, limit int, retryAfter time.Duration) *HTTPError {
	return &HTTPError{Code: fasthttp.StatusTooManyRequests, Type: which, ErrCode: "rate_limit_exceeded",
		Msg: "Rate limit reached for " + which + ": limit " + strconv.Itoa(limit) + " per minute. Retry after " +
			strconv.Itoa(int((retryAfter+time.Second-1)/time.Second)) + "s."}
}

// tokensTooLarge answers a request whose token estimate, asked, exceeds
// the whole budget of limit tokens per minute: retrying cannot help.
func tokensTooLarge(limit, asked int) *HTTPError {
	return &HTTPError{Code: fasthttp.StatusTooManyRequests, Type: "tokens", ErrCode: "rate_limit_exceeded",
		Msg: "Request too large for tokens per minute: limit " + strconv.Itoa(limit) + ", requested " + strconv.Itoa(asked) +
			" (the prompt's estimate plus max_tokens). Reduce the input or max_tokens."}
}

// tokensRateLimited answers a request whose token estimate, asked, does
// not fit what is left of the budget of limit tokens per minute.
func tokensRateLimited(limit, asked int, retryAfter time.Duration) *HTTPError {
	return &HTTPError{Code: fasthttp.StatusTooManyRequests, Type: "tokens", ErrCode: "rate_limit_exceeded",
		Msg: "Rate limit reached for tokens: limit " + strconv.Itoa(limit) + " per minute, requested " + strconv.Itoa(asked) +
			" (the prompt's estimate plus max_tokens). Retry after " +
			strconv.FormatInt(ratelimit.RetryAfterSeconds(retryAfter), 10) + "s."}
}

// Proxied requests (proxy.go, models.go).
var (
	errLogFull = &HTTPError{Code: fasthttp.StatusServiceUnavailable, Type: "server_error", ErrCode: "request_log_full",
		Msg: "The gateway cannot record more requests right now; retry shortly."}
	errModelNotFound = &HTTPError{Code: fasthttp.StatusNotFound, Type: "invalid_request_error", ErrCode: "model_not_found",
		Msg: "The model does not exist or is not served by this gateway."}
)

// modelNotFound is errModelNotFound naming the model id, one
// validModelID accepted.
func modelNotFound(id string) *HTTPError {
	e := *errModelNotFound
	e.Msg = "The model '" + id + "' does not exist or is not served by this gateway."
	return &e
}

// invalidRequest answers a body openai.ParseRequest refused.
func invalidRequest(re *openai.RequestError) *HTTPError {
	return &HTTPError{Code: fasthttp.StatusBadRequest, Type: "invalid_request_error", ErrCode: "invalid_request", Msg: re.Msg, Param: re.Param}
}

// Upstream failures, before the answer started (502, 504) and as the last
// event of a stream already under way.
var (
	errUpstream = &HTTPError{Code: fasthttp.StatusBadGateway, Type: "server_error", ErrCode: "upstream_error",
		Msg: "The upstream provider failed to answer."}
	errUpstreamTimeout = &HTTPError{Code: fasthttp.StatusGatewayTimeout, Type: "server_error", ErrCode: "upstream_timeout",
		Msg: "The upstream provider did not answer in time."}
	errUpstreamAuth = &HTTPError{Code: fasthttp.StatusBadGateway, Type: "server_error", ErrCode: "upstream_error",
		Msg: "The upstream provider refused the gateway's credentials."}
	errStreamBroke = &HTTPError{Code: fasthttp.StatusBadGateway, Type: "server_error", ErrCode: "upstream_error",
		Msg: "The upstream provider broke off the stream."}
	errShutdownCut = &HTTPError{Code: fasthttp.StatusServiceUnavailable, Type: "server_error", ErrCode: "service_unavailable",
		Msg: "The gateway is shutting down; the stream was cut. Retry the request."}
	// errCredentialInStream ends a stream cut before it delivered a
	// provider credential (redact.go).
	errCredentialInStream = &HTTPError{Code: fasthttp.StatusBadGateway, Type: "server_error", ErrCode: "upstream_error",
		Msg: "The upstream provider's answer was cut: it carried a credential of the gateway."}
)

// upstreamFailure maps a failed exchange to 504 (timeouts) or 502.
func upstreamFailure(err error) *HTTPError {
	var ne net.Error
	if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, fasthttp.ErrNoFreeConns) || errors.As(err, &ne) && ne.Timeout() {
		return withCause(errUpstreamTimeout, err)
	}
	return withCause(errUpstream, err)
}

// The tenant read API (logapi.go).
var errPromptNotFound = &HTTPError{Code: fasthttp.StatusNotFound, Type: "invalid_request_error", ErrCode: "not_found",
	Msg: "No such prompt."}

// badParam answers a query parameter of the read API that is not valid.
func badParam(param, msg string) *HTTPError {
	return &HTTPError{Code: fasthttp.StatusBadRequest, Type: "invalid_request_error", ErrCode: "invalid_parameter", Param: param,
		Msg: "Invalid '" + param + "': " + msg}
}

// statusClientClosed is the non-standard status (nginx, Caddy) logged when
// the client went away before the answer; the client never sees it.
const statusClientClosed = 499

// toHTTPError is the one mapping from an error to what the client sees.
func toHTTPError(err error) *HTTPError {
	var he *HTTPError
	switch {
	case errors.As(err, &he):
		return he
	case errors.Is(err, context.Canceled):
		return &HTTPError{Code: statusClientClosed, Type: "server_error", ErrCode: "client_closed", Msg: "client closed the request", Err: err}
	case errors.Is(err, context.DeadlineExceeded):
		return &HTTPError{Code: fasthttp.StatusGatewayTimeout, Type: "server_error", ErrCode: "timeout", Msg: "The request timed out.", Err: err}
	default:
		return withCause(errInternal, err)
	}
}

// writeError writes err as an OpenAI-shaped JSON body:
//
//	{"error":{"message":…,"type":…,"param":null,"code":…,"request_id":…}}
//
// and logs the cause of server-side failures. The message names the
// request id so that a user can quote it.
func (s *Server) writeError(rc *fasthttp.RequestCtx, reqID string, err error) {
	he := toHTTPError(err)
	if he.Code >= 500 && he.Code != statusClientClosed {
		s.log.Error("request failed", zap.String("request_id", reqID), zap.Int("status", he.Code), zap.Error(he.Err))
	}
	rc.Response.Header.SetContentType("application/json")
	rc.SetStatusCode(he.Code)
	rc.SetBody(marshalError(he, reqID))
}

// errorBody is the OpenAI error object, plus the request id.
type errorBody struct {
	Error struct {
		Message   string  `json:"message"`
		Type      string  `json:"type"`
		Param     *string `json:"param"`
		Code      *string `json:"code"`
		RequestID string  `json:"request_id"`
	} `json:"error"`
}

func marshalError(he *HTTPError, reqID string) []byte {
	var b errorBody
	b.Error.Message = he.Msg + " (request id: " + reqID + ")"
	b.Error.Type = he.Type
	if he.ErrCode != "" {
		b.Error.Code = &he.ErrCode
	}
	if he.Param != "" {
		b.Error.Param = &he.Param
	}
	b.Error.RequestID = reqID
	out, _ := json.Marshal(b) // cannot fail: strings and pointers to strings only
	return out
}

// writeJSON answers 200 with v as JSON.
func writeJSON(rc *fasthttp.RequestCtx, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	rc.SetContentType("application/json")
	rc.SetBody(b)
	return nil
}

// MarshalError is the OpenAI-shaped body of he for request reqID, as the
// API writes it: for the control plane's listener (gateway/control),
// which answers in the same shape.
func MarshalError(he *HTTPError, reqID string) []byte { return marshalError(he, reqID) }

// ToHTTPError is the one mapping from an error to what the client sees
// (an *HTTPError in the chain, a client's cancel, a deadline, else 500).
func ToHTTPError(err error) *HTTPError { return toHTTPError(err) }
