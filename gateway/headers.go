package gateway

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

// Headers cross the gateway by allowlist, in both directions. Everything
// else stays behind: the caller's credential (Authorization, api-key,
// x-api-key), cookies, hop-by-hop headers (Connection and what it names,
// Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade, Proxy-*), forwarding
// headers and anything naming a tenant or organization (X-Tenant-Id,
// OpenAI-Organization, OpenAI-Project): the tenant comes only from the
// credential, and the provider account is the gateway's, not the caller's.

// forwardRequestHeaders are copied from the caller to the upstream.
var forwardRequestHeaders = []string{
	fasthttp.HeaderContentType,
	fasthttp.HeaderAccept,
	fasthttp.HeaderUserAgent,
	"OpenAI-Beta",
	"Idempotency-Key",
	"Anthropic-Version", // Anthropic's API version and beta features, as the caller's SDK asks
	"Anthropic-Beta",
}

// forwardRequestPrefix: the OpenAI SDKs' own telemetry headers.
var forwardRequestPrefix = []byte("X-Stainless-")

// copyRequestHeaders copies the allowed headers of src to dst.
func copyRequestHeaders(dst, src *fasthttp.RequestHeader) {
	for _, name := range forwardRequestHeaders {
		if v := src.Peek(name); len(v) > 0 {
			dst.SetBytesV(name, v)
		}
	}
	for k, v := range src.All() {
		if len(k) > len(forwardRequestPrefix) && bytes.EqualFold(k[:len(forwardRequestPrefix)], forwardRequestPrefix) {
			dst.SetBytesKV(k, v)
		}
	}
	// The gateway parses what comes back: no compression upstream.
	dst.Set(fasthttp.HeaderAcceptEncoding, "identity")
}

// forwardResponseHeaders are copied from the upstream to the caller. Not
// among them: the provider's x-ratelimit-* (they describe the gateway's
// provider account, shared by all tenants), openai-organization, Set-Cookie,
// hop-by-hop headers, Server and x-request-id (the gateway sets its own).
var forwardResponseHeaders = []string{
	fasthttp.HeaderRetryAfter,
	"Openai-Processing-Ms",
	"Openai-Version",
	"Openai-Model",
}

// copyResponseHeaders copies the allowed headers of src to dst.
func copyResponseHeaders(dst, src *fasthttp.ResponseHeader) {
	if ct := src.ContentType(); len(ct) > 0 {
		dst.SetContentTypeBytes(ct)
	}
	for _, name := range forwardResponseHeaders {
		if v := src.Peek(name); len(v) > 0 {
			dst.SetBytesV(name, v)
		}
	}
}
