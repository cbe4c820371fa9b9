package gateway

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway/openai"
)

// upstream is one configured provider with its own connection pool. Only
// the hosts of configured upstreams are ever dialled: no part of a request
// chooses the address, and redirects are not followed.
type upstream struct {
	name        string
	azure       bool
	anthropic   bool // Anthropic's Messages API (messages.go), not OpenAI's
	scheme      string
	host        string // Host header and dial address
	basePath    string // openai: the base URL's path ("/v1"); azure: ""
	apiKey      string
	apiVersion  string
	deployments map[string]string
	client      *fasthttp.HostClient
	// openai kind, computed once so that target does not allocate: each
	// endpoint's upstream path, and the Authorization header's value.
	paths  [openai.Messages + 1]string
	bearer string
	// chain is where this upstream's requests go, in order: itself, then
	// its fallbacks (attempts.go).
	chain   []*upstream
	breaker *breaker // nil: never opens
	metrics upstreamMetrics
}

// newUpstream builds an upstream from its configuration. dial connects to
// its host:port; nil dials TCP within cfg.UpstreamConnectTimeout.
func newUpstream(name, kind, rawURL, apiKey, apiVersion string, deployments map[string]string, cfg config.Config, dial func(addr string) (net.Conn, error)) (*upstream, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("upstream %s: bad URL", name)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
	}
	up := &upstream{
		name: name, azure: kind == "azure", anthropic: kind == "anthropic", scheme: u.Scheme, host: u.Host,
		basePath: strings.TrimRight(u.Path, "/"), apiKey: apiKey, apiVersion: apiVersion, deployments: deployments,
	}
	for ep := range up.paths {
		up.paths[ep] = up.basePath + strings.TrimPrefix(openai.Endpoint(ep).Path(), "/v1")
	}
	if apiKey != "" {
		up.bearer = "Bearer " + apiKey
	}
	if up.anthropic {
		// Its base URL is the SDK's, without the version: Messages is
		// BASE/v1/messages.
		up.paths[openai.Messages] = up.basePath + openai.Messages.Path()
		if up.apiVersion == "" {
			up.apiVersion = defaultAnthropicVersion
		}
	}
	if dial == nil {
		dialer := &net.Dialer{Timeout: cfg.UpstreamConnectTimeout, KeepAlive: 30 * time.Second}
		dial = func(addr string) (net.Conn, error) { return dialer.Dial("tcp", addr) }
	}
	firstByte, idle := cfg.UpstreamFirstByteTimeout, cfg.UpstreamIdleTimeout
	up.client = &fasthttp.HostClient{
		Addr:                     addr,
		IsTLS:                    u.Scheme == "https",
		TLSConfig:                &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12},
		NoDefaultUserAgentHeader: true,
		// Errors name what was wrong with a response, never quote it: an
		// upstream may echo the provider key, and these errors are logged.
		SecureErrorLogMessage:  true,
		MaxConns:               cfg.UpstreamMaxConns,
		MaxConnWaitTimeout:     firstByte,
		MaxIdleConnDuration:    30 * time.Second,
		MaxResponseBodySize:    maxUpstreamBody,
		DisablePathNormalizing: true,
		ReadBufferSize:         16 << 10,
		WriteTimeout:           cfg.UpstreamTimeout,
		// Idempotent retries would resend a completion that may already be
		// billed; the client decides whether to retry.
		RetryIfErr: func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
		Dial: func(string) (net.Conn, error) {
			c, err := dial(addr)
			if err != nil {
				return nil, err
			}
			return &timedConn{Conn: c, firstByte: firstByte, idle: idle}, nil
		},
	}
	return up, nil
}

// defaultAnthropicVersion is the anthropic-version header sent to an
// Anthropic upstream when neither the caller nor its api_version names one.
const defaultAnthropicVersion = "2023-06-01"

// serves reports whether up speaks ep's dialect: Anthropic upstreams the
// Messages API, the others OpenAI's.
func (up *upstream) serves(ep openai.Endpoint) bool {
	return (ep == openai.Messages) == up.anthropic
}

// maxUpstreamBody caps a buffered (non-streaming) upstream response.
const maxUpstreamBody = 64 << 20

// target sets the request URI and the provider credential for calling ep
// with model on this upstream.
func (up *upstream) target(req *fasthttp.Request, ep openai.Endpoint, model string) {
	uri := req.URI()
	uri.SetScheme(up.scheme)
	uri.SetHost(up.host)
	req.Header.SetHost(up.host)
	if up.anthropic {
		uri.SetPath(up.paths[openai.Messages])
		uri.SetQueryString("")
		if up.apiKey != "" {
			req.Header.Set("X-Api-Key", up.apiKey)
		}
		if len(req.Header.Peek("Anthropic-Version")) == 0 {
			req.Header.Set("Anthropic-Version", up.apiVersion)
		}
		return
	}
	if !up.azure {
		uri.SetPath(up.paths[ep])
		uri.SetQueryString("")
		if up.bearer != "" {
			req.Header.Set(fasthttp.HeaderAuthorization, up.bearer)
		}
		return
	}
	if ep == openai.Responses {
		uri.SetPath("/openai/responses")
	} else {
		dep := model
		if d, ok := up.deployments[model]; ok {
			dep = d
		}
		uri.SetPath("/openai/deployments/" + url.PathEscape(dep) + strings.TrimPrefix(ep.Path(), "/v1"))
	}
	uri.SetQueryString("api-version=" + url.QueryEscape(up.apiVersion))
	if up.apiKey != "" {
		req.Header.Set("Api-Key", up.apiKey)
	}
}

// router maps a model to its upstream: an exact name, else the longest
// matching prefix route, else the default upstream (if any).
type router struct {
	exact    map[string]*upstream
	prefixes []prefixRoute // longest first
	def      *upstream     // nil: unrouted models are 404
	all      []*upstream
	// byName: the upstreams the model catalog may name
	// (config.UpstreamNames; a named upstream wins over the default's name).
	byName map[string]*upstream
}

type prefixRoute struct {
	prefix string
	up     *upstream
}

// newRouter builds the upstreams of cfg; dial is newUpstream's.
func newRouter(cfg config.Config, dial func(addr string) (net.Conn, error)) (*router, error) {
	r := &router{exact: map[string]*upstream{}, byName: map[string]*upstream{}}
	if cfg.UpstreamURL != "" {
		def, err := newUpstream("default", "openai", cfg.UpstreamURL, cfg.UpstreamAPIKey.Reveal(), "", nil, cfg, dial)
		if err != nil {
			return nil, err
		}
		r.def = def
		r.all = append(r.all, def)
		r.byName[config.DefaultUpstreamName] = def
	}
	for _, u := range cfg.Upstreams {
		up, err := newUpstream(u.Name, u.Kind, u.URL, u.APIKey.Reveal(), u.APIVersion, u.Deployments, cfg, dial)
		if err != nil {
			return nil, err
		}
		r.all = append(r.all, up)
		r.byName[u.Name] = up
		for _, m := range u.Models {
			if p, ok := strings.CutSuffix(m, "*"); ok {
				r.prefixes = append(r.prefixes, prefixRoute{p, up})
			} else {
				r.exact[m] = up
			}
		}
	}
	for _, up := range r.all {
		up.chain = []*upstream{up}
	}
	for _, u := range cfg.Upstreams {
		up := r.byName[u.Name]
		for _, f := range u.Fallbacks {
			fb, ok := r.byName[f]
			if !ok || fb == up {
				return nil, fmt.Errorf("upstream %s: fallback %q is not another upstream", u.Name, f)
			}
			up.chain = append(up.chain, fb)
		}
	}
	sort.SliceStable(r.prefixes, func(i, j int) bool { return len(r.prefixes[i].prefix) > len(r.prefixes[j].prefix) })
	if r.def == nil && len(r.all) == 0 {
		return nil, errors.New("no upstream configured: set BULKHEAD_UPSTREAM_URL or upstreams")
	}
	return r, nil
}

// route returns the upstream serving model, or nil.
func (r *router) route(model string) *upstream {
	if up, ok := r.exact[model]; ok {
		return up
	}
	for _, p := range r.prefixes {
		if strings.HasPrefix(model, p.prefix) {
			return p.up
		}
	}
	return r.def
}

// routedModels lists the exactly named models of the routes.
func (r *router) routedModels() []modelEntry {
	out := make([]modelEntry, 0, len(r.exact))
	for m, up := range r.exact {
		out = append(out, modelEntry{ID: m, Object: "model", OwnedBy: up.name})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// timedConn enforces the first-byte and idle timeouts on an upstream
// connection: after a request is written, the next read must return within
// firstByte; every later read within idle. A deadline fasthttp sets (the
// total timeout) still applies when it is sooner. fasthttp uses a
// connection from one goroutine at a time, so the fields need no lock.
type timedConn struct {
	net.Conn
	firstByte, idle time.Duration
	awaiting        bool      // a request was written; no byte of the answer yet
	deadline        time.Time // the read deadline fasthttp asked for
}

func (c *timedConn) Write(b []byte) (int, error) {
	c.awaiting = true
	return c.Conn.Write(b)
}

func (c *timedConn) SetDeadline(t time.Time) error {
	c.deadline = t
	return c.Conn.SetDeadline(t)
}

func (c *timedConn) SetReadDeadline(t time.Time) error {
	c.deadline = t
	return c.Conn.SetReadDeadline(t)
}

func (c *timedConn) Read(b []byte) (int, error) {
	d := c.idle
	if c.awaiting {
		d = c.firstByte
	}
	dl := time.Now().Add(d)
	if !c.deadline.IsZero() && c.deadline.Before(dl) {
		dl = c.deadline
	}
	if err := c.Conn.SetReadDeadline(dl); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.awaiting = false
	}
	return n, err
}
