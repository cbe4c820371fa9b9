package mock

import (
	"errors"
	"fmt"
	"time"
)

// Defaults and bounds for Options. Every default is written here once; an
// Options field left at its zero value gets the default named in its doc.
const (
	// DefaultChunks is the number of content chunks in a stream when
	// Options.Chunks is zero.
	DefaultChunks = 20

	// maxChunks bounds the content chunks of one stream, from the flag or
	// the x-mock-chunks header, so one request cannot make mockllm build an
	// unbounded text.
	maxChunks = 10000

	// maxLatency bounds Options.Latency, Options.ChunkDelay and the
	// x-mock-latency header.
	maxLatency = 10 * time.Minute
)

// Options configures a Server. The zero value is a fast, failure-free mock
// with DefaultChunks content chunks per stream.
type Options struct {
	// Latency is slept before the first byte of every inference response
	// (chat, completions, embeddings, responses), injected errors included.
	// Zero means no delay. The x-mock-latency header overrides it per
	// request, and also applies to /v1/models and the echo endpoint.
	Latency time.Duration

	// ChunkDelay is slept before each content chunk of a stream, so a
	// stream lasts about Chunks × ChunkDelay after its first event. Zero
	// means no delay.
	ChunkDelay time.Duration

	// Chunks is the number of content chunks in a stream. Zero means
	// DefaultChunks. It also sizes the completion text (see
	// newCompletionText), so non-stream responses use it too. The
	// x-mock-chunks header overrides it per request.
	Chunks int

	// FailRate is the probability, 0 to 1, that an inference request is
	// answered with an injected 500. Zero never fails; one always fails.
	// /v1/models and the echo endpoint never fail this way.
	FailRate float64
}

// Validate reports every out-of-range field at once. It has no side effects.
// NewServer does not call it: it applies defaults to zero fields and clamps
// the rest, so callers that take options from users should call Validate
// first.
func (o Options) Validate() error {
	var errs []error
	if o.Latency < 0 || o.Latency > maxLatency {
		errs = append(errs, fmt.Errorf("latency %v: must be between 0 and %v", o.Latency, maxLatency))
	}
	if o.ChunkDelay < 0 || o.ChunkDelay > maxLatency {
		errs = append(errs, fmt.Errorf("chunk delay %v: must be between 0 and %v", o.ChunkDelay, maxLatency))
	}
	if o.Chunks < 0 || o.Chunks > maxChunks {
		errs = append(errs, fmt.Errorf("chunks %d: must be between 1 and %d (0 means %d)", o.Chunks, maxChunks, DefaultChunks))
	}
	if !(o.FailRate >= 0 && o.FailRate <= 1) { // also rejects NaN
		errs = append(errs, fmt.Errorf("fail rate %v: must be between 0 and 1", o.FailRate))
	}
	return errors.Join(errs...)
}

// withDefaults returns o with defaults applied to zero fields and
// out-of-range fields clamped into range.
func (o Options) withDefaults() Options {
	o.Latency = min(max(o.Latency, 0), maxLatency)
	o.ChunkDelay = min(max(o.ChunkDelay, 0), maxLatency)
	if o.Chunks <= 0 {
		o.Chunks = DefaultChunks
	}
	o.Chunks = min(o.Chunks, maxChunks)
	if !(o.FailRate >= 0) { // negative or NaN
		o.FailRate = 0
	}
	o.FailRate = min(o.FailRate, 1)
	return o
}
