package openai

// Endpoint names one OpenAI API the gateway proxies. The zero value is no
// endpoint; functions given it report an error or return an empty result.
type Endpoint uint8

// The endpoints this package understands.
const (
	ChatCompletions Endpoint = iota + 1 // POST /v1/chat/completions
	Completions                         // POST /v1/completions (legacy)
	Embeddings                          // POST /v1/embeddings
	Responses                           // POST /v1/responses
	// Messages is Anthropic's Messages API, which the gateway serves for
	// models routed to Anthropic upstreams (messages.go).
	Messages // POST /v1/messages
)

var endpointPaths = [...]string{
	ChatCompletions: "/v1/chat/completions",
	Completions:     "/v1/completions",
	Embeddings:      "/v1/embeddings",
	Responses:       "/v1/responses",
	Messages:        "/v1/messages",
}

// EndpointForPath returns the Endpoint served at path, which must match
// exactly (no query string, no trailing slash), and false for any other
// path. It does not allocate.
func EndpointForPath(path []byte) (Endpoint, bool) {
	for ep := ChatCompletions; ep <= Messages; ep++ {
		if string(path) == endpointPaths[ep] {
			return ep, true
		}
	}
	return 0, false
}

// Path returns the URL path of e, such as "/v1/chat/completions", or "" for
// an unknown Endpoint.
func (e Endpoint) Path() string {
	if !e.valid() {
		return ""
	}
	return endpointPaths[e]
}

// String returns the path of e, or "unknown" for an unknown Endpoint.
func (e Endpoint) String() string {
	if !e.valid() {
		return "unknown"
	}
	return endpointPaths[e]
}

// StreamUsageOptIn reports whether streams of e carry token usage only when
// the request sets stream_options.include_usage (ChatCompletions and
// Completions). Only for these does the gateway call WithStreamUsage and
// drop the usage-only chunk; the Responses API always reports usage in its
// response.completed event, and Embeddings do not stream.
func (e Endpoint) StreamUsageOptIn() bool {
	return e == ChatCompletions || e == Completions
}

func (e Endpoint) valid() bool { return e >= ChatCompletions && e <= Messages }
