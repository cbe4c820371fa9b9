package gateway

import (
	"errors"
	"math/rand/v2"
	"time"

	"github.com/sony/gobreaker/v2"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/trace"
)

// Fallbacks and retries. A request goes to its route's upstream, then, if
// that fails before any byte of an answer has reached the caller (a connect
// error, a timeout, a 429 or a 5xx), to the upstream's fallbacks in order,
// then round the list again after a jittered backoff, until
// BULKHEAD_UPSTREAM_MAX_ATTEMPTS attempts or BULKHEAD_UPSTREAM_TIMEOUT
// (which bounds all attempts together) are spent. An upstream whose
// circuit is open (breaker.go) is passed over without an attempt. Once an
// answer's status is accepted its bytes flow to the caller and nothing is
// retried; the last failure's answer is the caller's. The body sent is the
// same bytes each time (the request's own buffer, alive until the handler
// returns); each attempt's request is rebuilt from the caller's, so no
// upstream's credential or address is sent to another.

// errUpstreamBusy answers a request whose upstreams all refused it with 429
// (their quota, not the caller's).
var errUpstreamBusy = &HTTPError{Code: fasthttp.StatusTooManyRequests, Type: "server_error", ErrCode: "upstream_rate_limited",
	Msg: "The upstream is rate limiting the gateway; retry later."}

// errNoUpstream answers a request whose every upstream has an open circuit.
var errNoUpstream = &HTTPError{Code: fasthttp.StatusServiceUnavailable, Type: "server_error", ErrCode: "upstream_unavailable",
	Msg: "No upstream can take the request now; retry later."}

// attemptFailed reports whether an attempt's outcome sends the request on:
// an error before the answer's headers, or a status the upstream uses for
// "not now" (429) or for its own failure (5xx).
func attemptFailed(err error, status int) bool {
	return err != nil || status == fasthttp.StatusTooManyRequests || status >= 500
}

// forward sends the request to primary's chain as described above and
// returns the upstream that answered with its answer in resp (the stream
// still open when stream is set), or the error of the last attempt. req
// and resp belong to the caller, who releases them; on an error resp holds
// nothing to read.
func (s *Server) forward(rc *fasthttp.RequestCtx, x *exchange, primary *upstream, body []byte, stream bool,
	req *fasthttp.Request, resp *fasthttp.Response) (*upstream, error) {
	chain := primary.chain
	deadline := x.start.Add(s.cfg.UpstreamTimeout)
	var lastErr error
	for i := 0; x.attempts < s.cfg.UpstreamMaxAttempts && i < s.cfg.UpstreamMaxAttempts*len(chain); i++ {
		up := chain[i%len(chain)]
		if !up.serves(x.wire) { // a fallback of another dialect
			continue
		}
		if i >= len(chain) { // a round again: back off first, unless the circuit is open anyway
			if up.breaker.state() == gobreaker.StateOpen {
				up.metrics.skipped.Inc()
				continue
			}
			if !s.backoff(i/len(chain), deadline) {
				break
			}
		}
		remaining := time.Until(deadline)
		if remaining <= 0 {
			break
		}
		done, ok := up.breaker.allow()
		if !ok {
			up.metrics.skipped.Inc()
			if x.span != nil {
				x.span.AddEvent(eventCircuitOpen, trace.WithAttributes(keyUpstream.String(up.name)))
			}
			continue
		}
		if x.attempts > 0 {
			req.Reset()
			resp.Reset()
		}
		x.attempts++
		x.upstream = up.name
		s.buildRequest(rc, x, up, req, body)
		req.SetTimeout(remaining)
		resp.StreamBody = stream

		var sp trace.Span
		if x.span != nil {
			x.provider = provider(up)
			sp = s.trace.attempt(x, up, req)
		}
		sent := time.Now()
		err := up.client.Do(req, resp)
		s.metrics.upstream.WithLabelValues(x.ep.Path()).Observe(time.Since(sent).Seconds())
		status := resp.StatusCode()
		if sp != nil {
			attemptDone(sp, err, status)
		}
		if !attemptFailed(err, status) {
			done(nil)
			up.metrics.ok.Inc()
			return up, nil
		}
		done(errAttemptFailed)
		if x.attempts >= s.cfg.UpstreamMaxAttempts {
			up.metrics.failed.Inc()
			if err == nil {
				return up, nil // the last answer, a 429 or 5xx, is the caller's
			}
			return nil, upstreamFailure(err)
		}
		up.metrics.retried.Inc()
		if err == nil {
			resp.CloseBodyStream() //nolint:errcheck // abandoning a failed answer
			err = errors.New("upstream " + up.name + " answered " + fasthttp.StatusMessage(status))
			switch status {
			case fasthttp.StatusTooManyRequests:
				lastErr = withCause(errUpstreamBusy, err)
			case fasthttp.StatusGatewayTimeout:
				lastErr = withCause(errUpstreamTimeout, err)
			default:
				lastErr = withCause(errUpstream, err)
			}
		} else {
			lastErr = upstreamFailure(err)
		}
	}
	resp.Reset()
	if lastErr == nil {
		return nil, errNoUpstream
	}
	return nil, lastErr
}

// buildRequest makes req the request for up: the caller's allowlisted
// headers, the request id, up's address and credential, the body.
func (s *Server) buildRequest(rc *fasthttp.RequestCtx, x *exchange, up *upstream, req *fasthttp.Request, body []byte) {
	req.Header.SetMethod(fasthttp.MethodPost)
	copyRequestHeaders(&req.Header, &rc.Request.Header)
	req.Header.Set("X-Request-Id", x.reqID)
	up.target(req, x.wire, x.model)
	req.SetBodyRaw(body)
}

// backoff waits before round n (1, 2, ...) of a request's chain: the base
// backoff doubled per round, jittered to 50%-150% so that callers retrying
// together spread out. It returns false, at once, when the wait would end
// past deadline, and when the gateway shuts down while waiting.
func (s *Server) backoff(round int, deadline time.Time) bool {
	base := s.cfg.UpstreamRetryBackoff << (round - 1)
	if base <= 0 {
		return time.Now().Before(deadline)
	}
	d := base/2 + rand.N(base)
	if time.Now().Add(d).After(deadline) {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.base.Done():
		return false
	}
}
