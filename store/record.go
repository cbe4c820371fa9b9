package store

import (
	"time"

	"github.com/google/uuid"
)

// LogRecord is one finished request as the gateway hands it to the request
// log: one row of prompts, written under OrgID's tenant context.
type LogRecord struct {
	// ID is the row's id, unique per accepted request: replays of the
	// spool are idempotent on (OrgID, ID). Zero: Writer.Record assigns one.
	// RequestID is not unique: a caller may send the same x-request-id
	// twice, and both requests are recorded.
	ID               uuid.UUID
	OrgID            uuid.UUID
	KeyID            uuid.UUID // uuid.Nil for a JWT principal
	RequestID        string
	Endpoint         string // "/v1/chat/completions", ...
	Model            string
	Prompt           string // the request's messages/prompt/input as sent (JSON)
	Response         string // the assembled response text, capped
	PromptTokens     int
	CompletionTokens int
	TotalTokens      int
	UsageSource      string // "upstream", "estimated" or "none"
	Status           int    // HTTP status the caller got (499: the caller went away)
	Latency          time.Duration
	Stream           bool
	CreatedAt        time.Time
}
