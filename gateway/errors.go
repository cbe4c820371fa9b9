package gateway

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
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

// Errors the gateway answers with. Each is a value: wrap it with Err set
// through withCause, never mutate it.
var (
	errNotFound         = &HTTPError{Code: fasthttp.StatusNotFound, Type: "invalid_request_error", ErrCode: "not_found", Msg: "Unknown request URL. Please check the URL and method."}
	errMethodNotAllowed = &HTTPError{Code: fasthttp.StatusMethodNotAllowed, Type: "invalid_request_error", ErrCode: "method_not_allowed", Msg: "Method not allowed for this URL."}
	errInternal         = &HTTPError{Code: fasthttp.StatusInternalServerError, Type: "server_error", ErrCode: "internal_error", Msg: "The gateway failed to handle the request. Quote the request id when reporting it."}
)

// withCause returns a copy of e that carries cause for the log.
func withCause(e *HTTPError, cause error) *HTTPError {
	c := *e
	c.Err = cause
	return &c
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
func (s *Server) writeError(ctx *fasthttp.RequestCtx, reqID string, err error) {
	he := toHTTPError(err)
	if he.Code >= 500 && he.Code != statusClientClosed {
		s.log.Error("request failed", zap.String("request_id", reqID), zap.Int("status", he.Code), zap.Error(he.Err))
	}
	ctx.Response.Header.SetContentType("application/json")
	ctx.SetStatusCode(he.Code)
	ctx.SetBody(marshalError(he, reqID))
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
