package gateway

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/ratelimit"
)

// authenticator is what the gateway needs from auth.Authenticator.
type authenticator interface {
	Authenticate(ctx context.Context, cred []byte, client netip.Addr) (*auth.Principal, error)
}

var _ authenticator = (*auth.Authenticator)(nil)

// credential extracts the one credential of a request from
// "Authorization: Bearer …", "api-key" (Azure SDKs) or "x-api-key". The
// same credential may appear in several of them, or several times in one;
// two different ones are refused, so that a request never mixes tenants and
// no header wins silently. The result aliases the request headers: valid
// only while the handler runs.
func credential(h *fasthttp.RequestHeader) ([]byte, error) {
	var cred []byte
	take := func(v []byte) error {
		v = bytes.TrimSpace(v)
		if len(v) == 0 {
			return nil
		}
		if cred != nil && !bytes.Equal(cred, v) {
			return errConflictingKeys
		}
		cred = v
		return nil
	}
	// PeekAll reuses its result slice on the next call: each list is used
	// up before the next name is read.
	for _, a := range h.PeekAll(fasthttp.HeaderAuthorization) {
		if len(a) == 0 {
			continue
		}
		const bearer = "bearer "
		if len(a) < len(bearer) || !bytes.EqualFold(a[:len(bearer)], []byte(bearer)) {
			return nil, errInvalidKey
		}
		if err := take(a[len(bearer):]); err != nil {
			return nil, err
		}
	}
	for _, name := range [...]string{"Api-Key", "X-Api-Key"} {
		for _, v := range h.PeekAll(name) {
			if err := take(v); err != nil {
				return nil, err
			}
		}
	}
	if cred == nil {
		return nil, errMissingKey
	}
	return cred, nil
}

// clientAddr is the address failed authentications are charged to: the
// TCP peer's. No forwarding header is believed, since no proxy is
// configured as trusted (a forged X-Forwarded-For must not pick the
// budget; THREATS 43).
func clientAddr(rc *fasthttp.RequestCtx) netip.Addr {
	a, _ := netip.AddrFromSlice(rc.RemoteIP())
	return a.Unmap()
}

// authenticate resolves the request's principal.
func (s *Server) authenticate(ctx context.Context, rc *fasthttp.RequestCtx) (*auth.Principal, error) {
	cred, err := credential(&rc.Request.Header)
	if err != nil {
		return nil, err
	}
	p, err := s.auth.Authenticate(ctx, cred, clientAddr(rc))
	var te *auth.ThrottledError
	switch {
	case err == nil:
		return p, nil
	case errors.Is(err, auth.ErrUnavailable):
		return nil, withCause(errAuthUnavailable, err)
	case errors.As(err, &te):
		// The same answer for an address and an organization: it tells
		// nothing about the key.
		secs := strconv.FormatInt(ratelimit.RetryAfterSeconds(te.RetryAfter), 10)
		rc.Response.Header.Set(ratelimit.HeaderRetryAfter, secs)
		return nil, authThrottled(secs, te)
	default:
		return nil, errInvalidKey
	}
}
