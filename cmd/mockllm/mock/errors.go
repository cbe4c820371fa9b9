package mock

import (
	"errors"
	"strconv"

	"github.com/valyala/fasthttp"
)

// apiError is an error answered with an OpenAI-shaped body:
//
//	{"error":{"message":Msg,"type":Type,"param":null,"code":Code}}
//
// Msg is what the client sees. Err, if set, is the underlying cause; it is
// reachable through errors.Is/As and is not sent unless Msg repeats it.
type apiError struct {
	Status int
	Type   string
	Code   string
	Msg    string
	Err    error
}

// Error implements error.
func (e *apiError) Error() string {
	if e.Err != nil {
		return strconv.Itoa(e.Status) + " " + e.Msg + ": " + e.Err.Error()
	}
	return strconv.Itoa(e.Status) + " " + e.Msg
}

// Unwrap returns the underlying cause.
func (e *apiError) Unwrap() error { return e.Err }

// errorKind returns the error type and code OpenAI uses for status, or the
// closest equivalent: invalid_request_error for unlisted 4xx statuses and
// server_error for the rest.
func errorKind(status int) (typ, code string) {
	switch status {
	case 400:
		return "invalid_request_error", "bad_request"
	case 401:
		return "invalid_request_error", "invalid_api_key"
	case 403:
		return "invalid_request_error", "permission_denied"
	case 404:
		return "invalid_request_error", "not_found"
	case 405:
		return "invalid_request_error", "method_not_allowed"
	case 408:
		return "invalid_request_error", "request_timeout"
	case 409:
		return "invalid_request_error", "conflict"
	case 413:
		return "invalid_request_error", "request_too_large"
	case 422:
		return "invalid_request_error", "unprocessable_entity"
	case 429:
		return "requests", "rate_limit_exceeded"
	case 500:
		return "server_error", "internal_error"
	case 502:
		return "server_error", "bad_gateway"
	case 503:
		return "server_error", "service_unavailable"
	case 504:
		return "server_error", "timeout"
	}
	if status >= 400 && status < 500 {
		return "invalid_request_error", "invalid_request_error"
	}
	return "server_error", "server_error"
}

// newAPIError returns an apiError for status with the type and code from
// errorKind.
func newAPIError(status int, msg string, err error) *apiError {
	typ, code := errorKind(status)
	return &apiError{Status: status, Type: typ, Code: code, Msg: msg, Err: err}
}

// writeError is the one place errors become responses. An apiError is sent
// as is; any other error becomes a 500 with a generic message. A 429 also
// gets "Retry-After: 1". Headers set before the error, such as
// x-mock-request-id or Allow, are kept.
func writeError(rc *fasthttp.RequestCtx, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		ae = newAPIError(fasthttp.StatusInternalServerError, "mockllm: internal error", err)
	}
	rc.Response.ResetBody()
	rc.SetStatusCode(ae.Status)
	rc.SetContentType("application/json")
	if ae.Status == fasthttp.StatusTooManyRequests {
		rc.Response.Header.Set("Retry-After", "1")
	}
	if string(rc.Path()) == "/v1/messages" { // Anthropic's shape
		b := append([]byte(nil), `{"type":"error","error":{"type":`...)
		b = appendJSONString(b, anthropicType(ae.Status))
		b = append(b, `,"message":`...)
		b = appendJSONString(b, ae.Msg)
		rc.SetBody(append(b, "}}"...))
		return
	}
	b := append([]byte(nil), `{"error":{"message":`...)
	b = appendJSONString(b, ae.Msg)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, ae.Type)
	b = append(b, `,"param":null,"code":`...)
	b = appendJSONString(b, ae.Code)
	b = append(b, "}}"...)
	rc.SetBody(b)
}

// anthropicType is the Anthropic error type of status.
func anthropicType(status int) string {
	switch status {
	case 400:
		return "invalid_request_error"
	case 401:
		return "authentication_error"
	case 403:
		return "permission_error"
	case 404:
		return "not_found_error"
	case 429:
		return "rate_limit_error"
	case 529, 503:
		return "overloaded_error"
	}
	return "api_error"
}
