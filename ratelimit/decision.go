package ratelimit

import (
	"strconv"
	"time"
)

// Source tells which limiter made a Decision.
type Source string

const (
	// SourceRedis: the shared budget in Redis, the same for every replica.
	SourceRedis Source = "redis"
	// SourceLocal: this instance's in-process limiter, either in
	// single-instance mode or because Redis is unavailable (FailLocal).
	SourceLocal Source = "local"
	// SourceNone: no limit applied (both limits unlimited) or no decision
	// was made (the Decision returned with an error).
	SourceNone Source = "none"
)

// Window is the state of one budget (requests or tokens) after a decision.
// The zero Window means the budget is unlimited.
type Window struct {
	// Limit is the budget's size: its Burst, which PerMinute sets to the
	// per-minute rate.
	Limit int
	// Remaining is how many units could be spent right now. For tokens it
	// is 0 while the key is in debt.
	Remaining int
	// Reset is the time until the budget is fully restored (Remaining =
	// Limit) if nothing more is spent.
	Reset time.Duration
}

// Decision is the outcome of Allow.
type Decision struct {
	// Allowed reports whether the request may proceed. A rejected request
	// consumed nothing.
	Allowed bool
	// Requests and Tokens are the budgets after the decision; a zero
	// Window means that budget is unlimited.
	Requests, Tokens Window
	// RetryAfter is, when not Allowed, the time until a request would be
	// admitted if nothing else is spent meanwhile; 0 when Allowed.
	RetryAfter time.Duration
	// Source is the limiter that decided.
	Source Source
	// Reservation is what Reserve set aside when it admitted; zero from
	// Allow and from a rejection.
	Reservation Reservation
}

// Reservation is the tokens Reserve set aside for one request. Hand it to
// Settle when the request ends, whatever its outcome.
type Reservation struct {
	// Tokens is how many were set aside; 0 when none were.
	Tokens int
	// Source is where: Redis, or this instance's local limiter (during an
	// outage), which is where Settle reconciles them.
	Source Source
}

// Header names written by Decision.Headers: OpenAI's, so that clients and
// SDKs that back off on them work unchanged.
const (
	HeaderLimitRequests     = "x-ratelimit-limit-requests"
	HeaderRemainingRequests = "x-ratelimit-remaining-requests"
	HeaderResetRequests     = "x-ratelimit-reset-requests"
	HeaderLimitTokens       = "x-ratelimit-limit-tokens"
	HeaderRemainingTokens   = "x-ratelimit-remaining-tokens"
	HeaderResetTokens       = "x-ratelimit-reset-tokens"
	HeaderRetryAfter        = "Retry-After"
)

// Headers writes the decision as OpenAI's rate-limit headers through set:
// x-ratelimit-{limit,remaining,reset}-requests when a request limit applies,
// x-ratelimit-{limit,remaining,reset}-tokens when a token limit applies, and
// Retry-After when the request is not allowed.
//
// Reset values use OpenAI's format, Go's duration notation rounded up to the
// millisecond: "20ms", "1s", "1.5s", "6m0s"; "0s" for a full budget.
// Retry-After is whole seconds, rounded up, at least 1.
func (d Decision) Headers(set func(name, value string)) {
	d.AppendHeaders(func(name string, value []byte) { set(name, string(value)) })
}

// AppendHeaders is Headers for a setter that copies the value's bytes
// (fasthttp's SetBytesV): the values are formatted into one buffer on the
// stack, reused from call to call, so the common decision costs no
// allocation.
func (d Decision) AppendHeaders(set func(name string, value []byte)) {
	var buf [32]byte
	if d.Requests.Limit > 0 {
		set(HeaderLimitRequests, strconv.AppendInt(buf[:0], int64(d.Requests.Limit), 10))
		set(HeaderRemainingRequests, strconv.AppendInt(buf[:0], int64(d.Requests.Remaining), 10))
		set(HeaderResetRequests, appendReset(buf[:0], d.Requests.Reset))
	}
	if d.Tokens.Limit > 0 {
		set(HeaderLimitTokens, strconv.AppendInt(buf[:0], int64(d.Tokens.Limit), 10))
		set(HeaderRemainingTokens, strconv.AppendInt(buf[:0], int64(d.Tokens.Remaining), 10))
		set(HeaderResetTokens, appendReset(buf[:0], d.Tokens.Reset))
	}
	if !d.Allowed {
		set(HeaderRetryAfter, strconv.AppendInt(buf[:0], RetryAfterSeconds(d.RetryAfter), 10))
	}
}

// appendReset appends FormatReset(d) to dst: under a second (the usual
// reset of a busy key) without allocating, as "NNNms", which is what
// time.Duration's String gives for a whole number of milliseconds below
// a second.
func appendReset(dst []byte, d time.Duration) []byte {
	if d <= 0 || d > time.Second-time.Millisecond {
		return append(dst, FormatReset(d)...)
	}
	ms := (d + time.Millisecond - 1) / time.Millisecond
	return append(strconv.AppendInt(dst, int64(ms), 10), "ms"...)
}

// FormatReset formats a reset duration as OpenAI does in
// x-ratelimit-reset-*: Go's duration notation, rounded up to the
// millisecond ("20ms", "1s", "6m0s"); "0s" when d is not positive.
func FormatReset(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	d = (d + time.Millisecond - 1) / time.Millisecond * time.Millisecond
	return d.String()
}

// RetryAfterSeconds is d in whole seconds for a Retry-After header: rounded
// up, at least 1, so that a client never retries before it may.
func RetryAfterSeconds(d time.Duration) int64 {
	s := int64((d + time.Second - 1) / time.Second)
	if s < 1 {
		return 1
	}
	return s
}
