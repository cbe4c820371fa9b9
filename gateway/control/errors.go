package control

import (
	"github.com/valyala/fasthttp"

	"github.com/bulkheadhq/bulkhead/gateway"
)

// The errors the control plane answers with. Each value is shared: never
// mutate it.
var (
	errNotFound         = &gateway.HTTPError{Code: fasthttp.StatusNotFound, Type: "invalid_request_error", ErrCode: "not_found", Msg: "Unknown request URL. Please check the URL and method."}
	errMethodNotAllowed = &gateway.HTTPError{Code: fasthttp.StatusMethodNotAllowed, Type: "invalid_request_error", ErrCode: "method_not_allowed", Msg: "Method not allowed for this URL."}
	errBodyTooLarge     = &gateway.HTTPError{Code: fasthttp.StatusRequestEntityTooLarge, Type: "invalid_request_error", ErrCode: "request_too_large",
		Msg: "Request body exceeds the limit of 65536 bytes."}

	// Every refused credential gets the same 401: unknown, revoked,
	// expired, malformed, a JWT without the admin role, an ended session.
	errUnauthenticated = &gateway.HTTPError{Code: fasthttp.StatusUnauthorized, Type: "invalid_request_error", ErrCode: "invalid_admin_credential",
		Msg: "Missing, invalid or expired credential. Send 'Authorization: Bearer TOKEN' with an operator token, a tenant administrator's JWT or a console session."}
	errReadOnly = &gateway.HTTPError{Code: fasthttp.StatusForbidden, Type: "invalid_request_error", ErrCode: "insufficient_scope",
		Msg: "This operator token has the read scope; the request would change something."}
	errOperatorsOnly = &gateway.HTTPError{Code: fasthttp.StatusForbidden, Type: "invalid_request_error", ErrCode: "permission_denied",
		Msg: "Only operators may do this."}
	errSessionsDown = &gateway.HTTPError{Code: fasthttp.StatusServiceUnavailable, Type: "server_error", ErrCode: "sessions_unavailable",
		Msg: "Console sessions are unavailable (their store cannot be reached); retry later, or send the credential itself as the bearer."}
	// The cross-tenant report reads every organization's place; a total
	// that left some out would be wrong (store.Admin.UsageByOrg).
	errUsageTargetUnknown = &gateway.HTTPError{Code: fasthttp.StatusServiceUnavailable, Type: "server_error", ErrCode: "target_unavailable",
		Msg: "An organization is placed on a database target that this control plane's configuration (database_targets) does not name, so the report would leave it out."}
	errTooManySessions = &gateway.HTTPError{Code: fasthttp.StatusServiceUnavailable, Type: "server_error", ErrCode: "too_many_sessions",
		Msg: "Too many console sessions are open; retry later."}

	// A tenant administrator naming another organization's id gets exactly
	// these, as for an id that exists nowhere.
	errOrgNotFound = &gateway.HTTPError{Code: fasthttp.StatusNotFound, Type: "invalid_request_error", ErrCode: "not_found",
		Msg: "No such organization."}
	errKeyNotFound = &gateway.HTTPError{Code: fasthttp.StatusNotFound, Type: "invalid_request_error", ErrCode: "not_found",
		Msg: "No such key, or it is revoked or expired."}
	errPromptNotFound = &gateway.HTTPError{Code: fasthttp.StatusNotFound, Type: "invalid_request_error", ErrCode: "not_found",
		Msg: "No such prompt."}

	errOrgMoving = &gateway.HTTPError{Code: fasthttp.StatusConflict, Type: "invalid_request_error", ErrCode: "organization_moving",
		Msg: "The organization is being moved to another placement; finish the move (bulkhead org move ID --resume) before deleting it."}
	errIdempotencyMismatch = &gateway.HTTPError{Code: fasthttp.StatusConflict, Type: "invalid_request_error", ErrCode: "idempotency_key_reused",
		Msg: "This Idempotency-Key was used before with a different request."}
	errUnsupportedMedia = &gateway.HTTPError{Code: fasthttp.StatusUnsupportedMediaType, Type: "invalid_request_error", ErrCode: "unsupported_media_type",
		Msg: "Send the body as application/json."}
)

// badBody answers a request body that is not what the endpoint takes;
// param names the offending field, if one is to blame.
func badBody(param, msg string) *gateway.HTTPError {
	return &gateway.HTTPError{Code: fasthttp.StatusBadRequest, Type: "invalid_request_error", ErrCode: "invalid_body", Param: param, Msg: msg}
}

// sessionsUnavailable answers a session operation whose Redis failed;
// the cause is logged, never shown.
func sessionsUnavailable(err error) error {
	he := *errSessionsDown
	he.Err = err
	return &he
}
