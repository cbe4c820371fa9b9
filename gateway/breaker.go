package gateway

import (
	"errors"

	"github.com/sony/gobreaker/v2"

	"github.com/bulkheadhq/bulkhead/config"
)

// breaker is an upstream's circuit breaker (gobreaker's two-step form: the
// outcome of an attempt is known only once its answer's headers are in):
// closed, it lets every request through and counts consecutive failures;
// BULKHEAD_UPSTREAM_BREAKER_FAILURES of them open it, and for
// BULKHEAD_UPSTREAM_BREAKER_COOLDOWN it lets nothing through, so requests
// go straight to the route's fallbacks instead of waiting for timeouts;
// then it is half-open: one probe at a time, whose success closes it and
// whose failure opens it again. A nil *breaker (failures 0) is always
// closed and costs nothing.
type breaker struct {
	cb *gobreaker.TwoStepCircuitBreaker[struct{}]
}

// errAttemptFailed is what a failed attempt reports to its breaker.
var errAttemptFailed = errors.New("upstream attempt failed")

// newBreaker returns name's breaker, reporting each change of state to
// onChange; nil when cfg disables breakers.
func newBreaker(name string, cfg config.Config, onChange func(name string, state gobreaker.State)) *breaker {
	if cfg.UpstreamBreakerFailures == 0 {
		return nil
	}
	n := uint32(cfg.UpstreamBreakerFailures)
	return &breaker{cb: gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        name,
		MaxRequests: 1, // half-open: one probe at a time
		Timeout:     cfg.UpstreamBreakerCooldown,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= n },
		OnStateChange: func(name string, _, to gobreaker.State) {
			if onChange != nil {
				onChange(name, to)
			}
		},
	})}
}

// allow reports whether an attempt may go to the upstream now, and if so
// the function that reports its outcome, called exactly once: nil for a
// success, errAttemptFailed for a failure.
func (b *breaker) allow() (done func(error), allowed bool) {
	if b == nil {
		return noReport, true
	}
	report, err := b.cb.Allow()
	if err != nil {
		return nil, false
	}
	return report, true
}

func noReport(error) {}

// state is the breaker's state as /readyz shows it: closed, half-open or
// open.
func (b *breaker) state() gobreaker.State {
	if b == nil {
		return gobreaker.StateClosed
	}
	return b.cb.State()
}
