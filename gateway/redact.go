package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"regexp"
	"strings"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/gateway/openai"
)

// redactor keeps what only the gateway may know from callers: every
// configured provider credential (from answers, streams and error bodies,
// and from the recorded text) and, in the upstream error bodies passed on,
// internal addresses. It is immutable and safe for concurrent use.
type redactor struct {
	// secrets are the credentials as they are or JSON-escaped: checked in
	// every answer, so cheap when absent (bytes.Contains per credential).
	secrets *openai.Secrets
	// encoded are other spellings, checked in error bodies only: each
	// credential's base64 (standard and URL alphabets, at the three
	// alignments, hence also inside "Bearer <key>" or "user:<key>"
	// encoded), also with "/" JSON-escaped, and its SHA-256 in hex.
	encoded [][]byte
	hosts   *regexp.Regexp // the configured upstreams' hosts, with any port; nil if none
}

func newRedactor(ups []*upstream) *redactor {
	r := &redactor{}
	var keys, hosts []string
	for _, up := range ups {
		if up.apiKey != "" {
			keys = append(keys, up.apiKey)
		}
		if h := up.hostname(); h != "" {
			hosts = append(hosts, hostPattern(h))
		}
	}
	r.secrets = openai.NewSecrets(keys...)
	seen := map[string]bool{}
	add := func(s string) {
		if len(s) >= 8 && !seen[s] {
			seen[s] = true
			r.encoded = append(r.encoded, []byte(s))
		}
	}
	for _, k := range keys {
		for _, c := range base64Cores([]byte(k)) {
			add(c)
			add(strings.ReplaceAll(c, "/", `\/`))
		}
		sum := sha256.Sum256([]byte(k))
		add(hex.EncodeToString(sum[:]))
		add(strings.ToUpper(hex.EncodeToString(sum[:])))
	}
	if len(hosts) > 0 {
		r.hosts = regexp.MustCompile(`(?i)(?:` + strings.Join(hosts, "|") + `)(?::\d{1,5})?`)
	}
	return r
}

// hostname is the upstream's host name or address, without port or
// brackets.
func (up *upstream) hostname() string {
	h := up.host
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.HasSuffix(h, "]") {
		h = h[:i]
	}
	return strings.Trim(h, "[]")
}

// hostPattern matches h as a whole name: not inside a longer one.
func hostPattern(h string) string {
	p := regexp.QuoteMeta(h)
	if isWordByte(h[0]) {
		p = `\b` + p
	}
	if isWordByte(h[len(h)-1]) {
		p += `\b`
	}
	return p
}

func isWordByte(c byte) bool {
	return c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// base64Cores returns the parts of the base64 encodings of key that are
// the same wherever key stands in the encoded text: for each alignment of
// key to the 3-byte groups, the characters that depend on key's bytes
// alone. Any base64 of a text holding key holds one of them.
func base64Cores(key []byte) []string {
	var out []string
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		for a := range 3 {
			buf := append(make([]byte, a, a+len(key)), key...)
			e := enc.EncodeToString(buf)
			skip := [3]int{0, 2, 3}[a] // characters holding bits of the bytes before key
			end := len(buf) / 3 * 4    // characters of whole groups: the rest depend on what follows
			if end > skip {
				out = append(out, e[skip:end])
			}
		}
	}
	return out
}

// response removes the credentials from a 2xx body (the bytes delivered)
// and from res.Text (the bytes recorded), and reports whether there was
// one. body is not modified.
func (r *redactor) response(body []byte, res *openai.Result) ([]byte, bool) {
	body, found := r.secrets.Redact(body)
	if text, ok := r.secrets.RedactString(res.Text); ok {
		res.Text, found = text, true
	}
	return body, found
}

// secretLike matches OpenAI-style keys (anyone's) in upstream error bodies.
var secretLike = regexp.MustCompile(`sk-[A-Za-z0-9_\-]{6,}`)

// internalAddr matches what an upstream's error may tell about the network
// behind it: connection strings, private, loopback and link-local
// addresses (IPv4 with any port, IPv6 unique-local), and names under
// internal-only suffixes.
var internalAddr = regexp.MustCompile(`(?i)` +
	`\b(?:postgres(?:ql)?|redis|rediss|mysql|mariadb|mongodb(?:\+srv)?|amqps?|memcached?|jdbc:[a-z0-9]+)://[^\s"'<>\\]+` +
	`|\b(?:10(?:\.\d{1,3}){3}|127(?:\.\d{1,3}){3}|169\.254(?:\.\d{1,3}){2}|192\.168(?:\.\d{1,3}){2}|172\.(?:1[6-9]|2\d|3[01])(?:\.\d{1,3}){2})\b(?::\d{1,5})?` +
	`|\[?\bf[cd][0-9a-f]{2}(?::[0-9a-f]{0,4}){2,7}\]?(?::\d{1,5})?` +
	`|\b(?:localhost|(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+(?:internal|local|localdomain|lan|corp|intranet|svc))\b(?::\d{1,5})?`)

// loopback6 matches the IPv6 loopback address, which starts with no word
// character for \b to anchor on; group 1 keeps the byte before it.
var loopback6 = regexp.MustCompile(`(^|[^0-9A-Za-z:])(?:\[::1\](?::\d{1,5})?|::1\b)`)

// errorBody scrubs an upstream error body before the caller sees it: the
// credentials in every spelling it knows, anything shaped like an OpenAI
// key, and internal addresses and the upstreams' hosts. It reports whether
// a configured credential was there. body is not modified.
func (r *redactor) errorBody(body []byte) ([]byte, bool) {
	body, found := r.secrets.Redact(body)
	for _, e := range r.encoded {
		if bytes.Contains(body, e) {
			body, found = bytes.ReplaceAll(body, e, []byte(openai.Redacted)), true
		}
	}
	if bytes.Contains(body, []byte("sk-")) {
		body = secretLike.ReplaceAll(body, []byte("sk-[redacted]"))
	}
	body = internalAddr.ReplaceAll(body, []byte("[internal]"))
	body = loopback6.ReplaceAll(body, []byte("${1}[internal]"))
	if r.hosts != nil {
		body = r.hosts.ReplaceAll(body, []byte("[upstream]"))
	}
	return body, found
}

// Where a provider credential was withheld: the metric's label values.
const (
	leakResponse = "response" // a buffered 2xx answer
	leakStream   = "stream"   // a stream, cut
	leakError    = "error"    // an upstream error body passed on
)

// credentialWithheld records a security event: the upstream sent a
// provider credential, which the caller did not get. The log names the
// request and the upstream, never the credential.
func (s *Server) credentialWithheld(x *exchange, where string) {
	s.metrics.credentialBlocked.WithLabelValues(where).Inc()
	s.log.Warn("security: upstream sent a provider credential; withheld from the caller",
		zap.String("request_id", x.reqID), zap.String("upstream", x.upstream), zap.String("where", where))
}

// headers removes the credentials from the upstream headers forwarded in
// h (copyResponseHeaders) and reports whether there was one.
func (r *redactor) headers(h *fasthttp.ResponseHeader) bool {
	found := false
	if v, ok := r.secrets.Redact(h.ContentType()); ok {
		h.SetContentTypeBytes(v)
		found = true
	}
	for _, name := range forwardResponseHeaders {
		if v, ok := r.secrets.Redact(h.Peek(name)); ok {
			h.SetBytesV(name, v)
			found = true
		}
	}
	return found
}

// scrubResponse scrubs a buffered 2xx answer of x: the forwarded headers
// h, the body it returns, and res.Text; it logs and counts a credential.
func (s *Server) scrubResponse(x *exchange, h *fasthttp.ResponseHeader, body []byte, res *openai.Result) []byte {
	body, found := s.redact.response(body, res)
	if bytes.HasPrefix(h.ContentType(), []byte("text/event-stream")) {
		var cut bool
		body, cut = s.redact.bufferedStream(x, body)
		found = found || cut
	}
	if s.redact.headers(h) || found {
		s.credentialWithheld(x, leakResponse)
	}
	return body
}

// bufferedStream passes a whole event stream, answered to a request that
// did not ask for one (or with a status other than 200), through the
// stream guard: spread over events, a credential is no more delivered
// than when streamed.
func (r *redactor) bufferedStream(x *exchange, body []byte) ([]byte, bool) {
	tee := openai.AcquireStreamTee(x.ep, false, 0)
	defer openai.ReleaseStreamTee(tee)
	tee.SetSecrets(r.secrets)
	out := make([]byte, 0, len(body))
	collect := func(ev []byte) error { out = append(out, ev...); return nil }
	if tee.Write(body, collect) == nil && tee.Flush(collect) == nil {
		return body, false
	}
	return append(out, streamErrorEvent(x.reqID, errCredentialInStream)...), true
}

// scrubError scrubs an upstream error answer of x that is passed on: the
// forwarded headers h and the body it returns; it logs and counts a
// credential.
func (s *Server) scrubError(x *exchange, h *fasthttp.ResponseHeader, body []byte) []byte {
	body, found := s.redact.errorBody(body)
	if s.redact.headers(h) || found {
		s.credentialWithheld(x, leakError)
	}
	return body
}

// scrubStreamHeaders scrubs the forwarded headers h of a stream of x (the
// tee guards its body); it logs and counts a credential.
func (s *Server) scrubStreamHeaders(x *exchange, h *fasthttp.ResponseHeader) {
	if s.redact.headers(h) {
		s.credentialWithheld(x, leakStream)
	}
}
