// Package config holds Bulkhead's one Config struct: its defaults, loading
// from an optional YAML file and BULKHEAD_* environment variables, and
// validation.
//
// Every setting is declared once, as a field of Config whose tags carry the
// YAML key, the environment variable, the default and a one-line meaning.
// The README's configuration table is checked against those tags by a test.
//
// Precedence, lowest first: the default tag, the YAML file, the environment.
// Loading has no side effects beyond reading the file.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
	"go.yaml.in/yaml/v3"
)

// Config is the whole configuration of a Bulkhead process. The zero value
// is not useful; obtain one from Default or Load.
type Config struct {
	Listen      string `yaml:"listen" env:"BULKHEAD_LISTEN" default:":8080" help:"address of the OpenAI-compatible API"`
	AdminListen string `yaml:"admin_listen" env:"BULKHEAD_ADMIN_LISTEN" default:"127.0.0.1:9090" help:"address of the admin listener (health, metrics, pprof); keep it private"`

	DatabaseURL      Secret `yaml:"database_url" env:"BULKHEAD_DATABASE_URL" default:"postgres://bulkhead_app:bulkhead@127.0.0.1:5432/bulkhead?sslmode=disable" help:"PostgreSQL DSN of the runtime app role (no superuser, no BYPASSRLS, owns nothing)"`
	AdminDatabaseURL Secret `yaml:"admin_database_url" env:"BULKHEAD_ADMIN_DATABASE_URL" default:"postgres://bulkhead_owner:bulkhead@127.0.0.1:5432/bulkhead?sslmode=disable" help:"PostgreSQL DSN of the owner role, used only by migrate and the admin subcommands"`
	DatabaseMaxConns int32  `yaml:"database_max_conns" env:"BULKHEAD_DATABASE_MAX_CONNS" default:"10" help:"size of the runtime connection pool"`

	RedisURL Secret `yaml:"redis_url" env:"BULKHEAD_REDIS_URL" default:"redis://127.0.0.1:6379/0" help:"Redis shared by all replicas for key cache, revocation and limits; set it empty for single-instance mode (in-process cache and limiter)"`

	RedisTimeout time.Duration `yaml:"redis_timeout" env:"BULKHEAD_REDIS_TIMEOUT" default:"100ms" help:"deadline of every Redis call; past it the gateway falls back (caches, PostgreSQL, local limiter) instead of waiting"`

	AuthCacheTTL          time.Duration `yaml:"auth_cache_ttl" env:"BULKHEAD_AUTH_CACHE_TTL" default:"30s" help:"absolute lifetime of a verified key in the in-process cache: the bound on staleness when a revocation event is missed"`
	AuthCacheSize         int           `yaml:"auth_cache_size" env:"BULKHEAD_AUTH_CACHE_SIZE" default:"100000" help:"maximum entries in the in-process key cache"`
	AuthNegativeCacheTTL  time.Duration `yaml:"auth_negative_cache_ttl" env:"BULKHEAD_AUTH_NEGATIVE_CACHE_TTL" default:"60s" help:"how long an unknown or revoked key is remembered in process, so floods of bad keys never reach Redis or PostgreSQL"`
	AuthNegativeCacheSize int           `yaml:"auth_negative_cache_size" env:"BULKHEAD_AUTH_NEGATIVE_CACHE_SIZE" default:"100000" help:"maximum entries in the in-process negative cache"`
	AuthRedisTTL          time.Duration `yaml:"auth_redis_ttl" env:"BULKHEAD_AUTH_REDIS_TTL" default:"5m" help:"lifetime of a key's entry in Redis (the shared second-level cache)"`

	AuthFailuresPerMinutePerAddress int `yaml:"auth_failures_per_minute_per_address" env:"BULKHEAD_AUTH_FAILURES_PER_MINUTE_PER_ADDRESS" default:"60" help:"failed API-key look-ups (keys PostgreSQL finds unknown, revoked or expired) per minute per client address, a minute's worth at once; past it, keys that no cache knows get 429 without a database look-up. The address is the TCP peer (IPv6: its /64), so behind a proxy it is the proxy's: raise it there (0: no limit)"`
	AuthFailuresPerMinutePerOrg     int `yaml:"auth_failures_per_minute_per_org" env:"BULKHEAD_AUTH_FAILURES_PER_MINUTE_PER_ORG" default:"600" help:"the same per organization named by the keys, all addresses together; while it is spent the organization's keys cached in process or in Redis keep working and keys that no cache knows get 429 (0: no limit)"`

	JWTHS256Secret        Secret        `yaml:"jwt_hs256_secret" env:"BULKHEAD_JWT_HS256_SECRET" default:"" help:"shared secret for HS256 JWTs (at least 32 bytes); empty disables HS256"`
	JWTPublicKeyFile      string        `yaml:"jwt_public_key_file" env:"BULKHEAD_JWT_PUBLIC_KEY_FILE" default:"" help:"PEM file with the RSA (RS256) or P-256 (ES256) public key that verifies JWTs; empty disables them"`
	JWTIssuer             string        `yaml:"jwt_issuer" env:"BULKHEAD_JWT_ISSUER" default:"" help:"required iss claim of JWTs; empty accepts any issuer"`
	JWTAudience           string        `yaml:"jwt_audience" env:"BULKHEAD_JWT_AUDIENCE" default:"" help:"required aud claim of JWTs; empty accepts any audience"`
	JWTRateLimitPerMinute int           `yaml:"jwt_rate_limit_per_minute" env:"BULKHEAD_JWT_RATE_LIMIT_PER_MINUTE" default:"600" help:"requests per minute of each organization's JWT callers together (0: no limit)"`
	JWTTokensPerMinute    int           `yaml:"jwt_tokens_per_minute" env:"BULKHEAD_JWT_TOKENS_PER_MINUTE" default:"0" help:"tokens per minute of each organization's JWT callers together (0: no limit)"`
	RateLimitLease        bool          `yaml:"rate_limit_lease" env:"BULKHEAD_RATE_LIMIT_LEASE" default:"true" help:"let each replica take a slice (1/64) of a busy key's request budget from Redis at once and admit from it locally; never admits more than the budget, may admit slightly fewer (see ratelimit docs); keys under 128 rpm are always decided in Redis"`
	RateLimitFailClosed   bool          `yaml:"rate_limit_fail_closed" env:"BULKHEAD_RATE_LIMIT_FAIL_CLOSED" default:"false" help:"while Redis is unreachable, answer 503 instead of falling back to each instance's local limiter (which admits its share of each budget, see ratelimit docs)"`
	JWTLeeway             time.Duration `yaml:"jwt_leeway" env:"BULKHEAD_JWT_LEEWAY" default:"30s" help:"clock skew tolerated on exp, nbf and iat"`

	TPMDefaultCompletionEstimate int `yaml:"tpm_default_completion_estimate" env:"BULKHEAD_TPM_DEFAULT_COMPLETION_ESTIMATE" default:"256" help:"completion tokens set aside from a key's tokens-per-minute budget, on top of the prompt's estimate, for a request that sets no max_tokens (max_completion_tokens, max_output_tokens); the actual usage replaces the estimate when the answer ends"`

	UpstreamURL    string `yaml:"upstream_url" env:"BULKHEAD_UPSTREAM_URL" default:"http://127.0.0.1:8081/v1" help:"base URL of the default OpenAI-compatible upstream, as an SDK's base URL (the dev default is the mock upstream)"`
	UpstreamAPIKey Secret `yaml:"upstream_api_key" env:"BULKHEAD_UPSTREAM_API_KEY" default:"" help:"provider credential sent to the default upstream; never shown to callers"`

	UpstreamConnectTimeout   time.Duration `yaml:"upstream_connect_timeout" env:"BULKHEAD_UPSTREAM_CONNECT_TIMEOUT" default:"5s" help:"deadline for dialling an upstream"`
	UpstreamFirstByteTimeout time.Duration `yaml:"upstream_first_byte_timeout" env:"BULKHEAD_UPSTREAM_FIRST_BYTE_TIMEOUT" default:"120s" help:"deadline for the upstream's first response byte after the request is sent (a non-streaming completion must be generated within it)"`
	UpstreamIdleTimeout      time.Duration `yaml:"upstream_idle_timeout" env:"BULKHEAD_UPSTREAM_IDLE_TIMEOUT" default:"60s" help:"longest silence between two reads of an upstream response, e.g. between stream events"`
	UpstreamTimeout          time.Duration `yaml:"upstream_timeout" env:"BULKHEAD_UPSTREAM_TIMEOUT" default:"10m" help:"deadline for a whole upstream exchange, stream included"`
	UpstreamMaxConns         int           `yaml:"upstream_max_conns" env:"BULKHEAD_UPSTREAM_MAX_CONNS" default:"1024" help:"open connections per upstream host; further requests wait up to the first-byte timeout"`
	CaptureMaxBytes          int           `yaml:"capture_max_bytes" env:"BULKHEAD_CAPTURE_MAX_BYTES" default:"1048576" help:"most response text kept per request for the request log; longer text is truncated, usage is still exact"`

	// Upstreams routes models to providers other than the default upstream.
	// YAML only; each credential comes from the environment variable its
	// api_key_env names.
	Upstreams []Upstream `yaml:"upstreams"`

	RequestLog    bool   `yaml:"request_log" env:"BULKHEAD_REQUEST_LOG" default:"true" help:"write every request to the prompts table; false keeps only the access log line (for benchmarks and debugging, not for production)"`
	SpoolDir      string `yaml:"spool_dir" env:"BULKHEAD_SPOOL_DIR" default:".run/spool" help:"directory of the request log's disk spool, which keeps every record through a PostgreSQL outage or a restart; one per replica; empty disables it (records then wait in memory)"`
	SpoolMaxBytes int64  `yaml:"spool_max_bytes" env:"BULKHEAD_SPOOL_MAX_BYTES" default:"1073741824" help:"spool size at which new requests get 503 rather than risk a record"`
	SpoolFsync    string `yaml:"spool_fsync" env:"BULKHEAD_SPOOL_FSYNC" default:"interval" help:"when the request log's journal and spool reach the disk: interval (written before each answer is sent, fsynced every second: a machine crash may lose the last second), batch (fsynced before each answer is sent; costs an fsync per group of concurrent requests) or never (left to the kernel); a process crash loses nothing under any of them"`

	MaxRequestBodyBytes int           `yaml:"max_request_body_bytes" env:"BULKHEAD_MAX_REQUEST_BODY_BYTES" default:"4194304" help:"largest request body accepted; larger bodies get 413"`
	ShutdownTimeout     time.Duration `yaml:"shutdown_timeout" env:"BULKHEAD_SHUTDOWN_TIMEOUT" default:"30s" help:"how long in-flight requests may take to finish after SIGTERM"`

	ShutdownGrace    time.Duration `yaml:"shutdown_grace" env:"BULKHEAD_SHUTDOWN_GRACE" default:"0s" help:"after SIGTERM, how long the gateway keeps accepting connections while reporting not ready, so load balancers stop sending first (5s behind a Kubernetes Service)"`
	MetricsPerTenant bool          `yaml:"metrics_per_tenant" env:"BULKHEAD_METRICS_PER_TENANT" default:"false" help:"add a per-organization request counter (one series per tenant: mind the cardinality)"`

	LogLevel  string `yaml:"log_level" env:"BULKHEAD_LOG_LEVEL" default:"info" help:"debug, info, warn or error"`
	LogFormat string `yaml:"log_format" env:"BULKHEAD_LOG_FORMAT" default:"json" help:"json or console; logs go to stderr, json buffered (256 KiB, written at least every second and at exit), console line by line"`
}

// Upstream is a provider that serves some models.
type Upstream struct {
	Name string `yaml:"name"`
	// Kind is "openai" (any OpenAI-compatible server: OpenAI, vLLM,
	// Ollama, ...) or "azure" (Azure OpenAI: deployment paths, api-version,
	// api-key header).
	Kind string `yaml:"kind"`
	// URL is the base URL: for openai as an SDK's base URL
	// ("https://api.openai.com/v1"), for azure the resource endpoint
	// ("https://NAME.openai.azure.com").
	URL string `yaml:"url"`
	// APIKeyEnv names the environment variable holding the credential.
	APIKeyEnv string `yaml:"api_key_env"`
	// APIKey is resolved from APIKeyEnv by Load.
	APIKey Secret `yaml:"-"`
	// APIVersion is Azure's api-version query parameter.
	APIVersion string `yaml:"api_version"`
	// Models this upstream serves: exact names, or prefixes ending in "*".
	Models []string `yaml:"models"`
	// Deployments maps a model to its Azure deployment name; by default
	// the deployment is named like the model.
	Deployments map[string]string `yaml:"deployments"`
}

// Var describes one setting, for documentation and tooling.
type Var struct {
	Env     string // environment variable, e.g. BULKHEAD_LISTEN
	YAML    string // key in the YAML file
	Default string // default as written in the environment
	Help    string // one-line meaning
}

// Vars lists every setting in declaration order.
func Vars() []Var {
	t := reflect.TypeFor[Config]()
	vars := make([]Var, 0, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Tag.Get("env") == "" {
			continue
		}
		vars = append(vars, Var{
			Env:     f.Tag.Get("env"),
			YAML:    f.Tag.Get("yaml"),
			Default: f.Tag.Get("default"),
			Help:    f.Tag.Get("help"),
		})
	}
	return vars
}

// Default returns the configuration made of the default tags alone. It
// panics only if a default tag does not parse, which a test rules out.
func Default() Config {
	var c Config
	v := reflect.ValueOf(&c).Elem()
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if f.Tag.Get("env") == "" {
			continue
		}
		if err := setField(v.Field(i), f.Tag.Get("default")); err != nil {
			panic(fmt.Sprintf("config: default of %s: %v", f.Tag.Get("env"), err))
		}
	}
	return c
}

// Load builds a Config from the defaults, then the YAML file at path (if
// path is not empty), then the environment as seen through lookupEnv
// (os.LookupEnv in production). A variable that is set but empty counts as
// set: BULKHEAD_REDIS_URL= selects single-instance mode. The result is
// validated; the error lists every problem, each naming its variable.
func Load(path string, lookupEnv func(string) (string, bool)) (Config, error) {
	c := Default()
	if path != "" {
		if err := c.loadFile(path); err != nil {
			return Config{}, err
		}
	}
	var errs []error
	v := reflect.ValueOf(&c).Elem()
	for i := range v.NumField() {
		env := v.Type().Field(i).Tag.Get("env")
		if env == "" {
			continue
		}
		s, ok := lookupEnv(env)
		if !ok {
			continue
		}
		if err := setField(v.Field(i), s); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", env, err))
		}
	}
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		if u.APIKeyEnv != "" {
			key, ok := lookupEnv(u.APIKeyEnv)
			if !ok || key == "" {
				errs = append(errs, fmt.Errorf("upstreams[%d].api_key_env: variable %s is not set", i, u.APIKeyEnv))
			}
			u.APIKey = Secret(key)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

func (c *Config) loadFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

var durationType = reflect.TypeFor[time.Duration]()

// setField parses s into the field according to the field's type.
func setField(f reflect.Value, s string) error {
	if f.Type() == durationType {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("not a duration like \"30s\": %q", s)
		}
		f.SetInt(int64(d))
		return nil
	}
	switch f.Kind() {
	case reflect.String:
		f.SetString(s)
	case reflect.Int, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, f.Type().Bits())
		if err != nil {
			return fmt.Errorf("not an integer: %q", s)
		}
		f.SetInt(n)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("not a boolean: %q", s)
		}
		f.SetBool(b)
	case reflect.Float64:
		x, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return fmt.Errorf("not a number: %q", s)
		}
		f.SetFloat(x)
	default:
		return fmt.Errorf("unsupported setting type %s", f.Type())
	}
	return nil
}

// Validate reports every problem of c at once, each naming its variable. It
// has no side effects: it neither dials nor resolves anything.
func (c Config) Validate() error {
	var errs []error
	bad := func(env, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", env, fmt.Sprintf(format, args...)))
	}
	checkAddr := func(env, addr string) {
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
			bad(env, "want host:port (e.g. \":8080\"), got %q", addr)
		}
	}
	checkURL := func(env, raw string, schemes ...string) {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" && u.Scheme != "unix" {
			bad(env, "want a URL with scheme %s and a host", strings.Join(schemes, " or "))
			return
		}
		for _, s := range schemes {
			if u.Scheme == s {
				return
			}
		}
		bad(env, "scheme %q not allowed, want %s", u.Scheme, strings.Join(schemes, " or "))
	}

	checkAddr("BULKHEAD_LISTEN", c.Listen)
	checkAddr("BULKHEAD_ADMIN_LISTEN", c.AdminListen)
	checkURL("BULKHEAD_DATABASE_URL", c.DatabaseURL.Reveal(), "postgres", "postgresql")
	checkURL("BULKHEAD_ADMIN_DATABASE_URL", c.AdminDatabaseURL.Reveal(), "postgres", "postgresql")
	if c.DatabaseMaxConns < 1 {
		bad("BULKHEAD_DATABASE_MAX_CONNS", "must be at least 1, got %d", c.DatabaseMaxConns)
	}
	if c.RedisURL != "" {
		checkURL("BULKHEAD_REDIS_URL", c.RedisURL.Reveal(), "redis", "rediss", "unix")
	}
	positive := func(env string, d time.Duration) {
		if d <= 0 {
			bad(env, "must be positive, got %s", d)
		}
	}
	positive("BULKHEAD_REDIS_TIMEOUT", c.RedisTimeout)
	if c.RedisTimeout > time.Second {
		bad("BULKHEAD_REDIS_TIMEOUT", "must be at most 1s (it is added to a request whenever Redis stalls), got %s", c.RedisTimeout)
	}
	positive("BULKHEAD_AUTH_CACHE_TTL", c.AuthCacheTTL)
	positive("BULKHEAD_AUTH_NEGATIVE_CACHE_TTL", c.AuthNegativeCacheTTL)
	positive("BULKHEAD_AUTH_REDIS_TTL", c.AuthRedisTTL)
	if c.AuthCacheSize < 1 {
		bad("BULKHEAD_AUTH_CACHE_SIZE", "must be at least 1, got %d", c.AuthCacheSize)
	}
	if c.AuthNegativeCacheSize < 1 {
		bad("BULKHEAD_AUTH_NEGATIVE_CACHE_SIZE", "must be at least 1, got %d", c.AuthNegativeCacheSize)
	}
	if c.AuthFailuresPerMinutePerAddress < 0 {
		bad("BULKHEAD_AUTH_FAILURES_PER_MINUTE_PER_ADDRESS", "must not be negative, got %d", c.AuthFailuresPerMinutePerAddress)
	}
	if c.AuthFailuresPerMinutePerOrg < 0 {
		bad("BULKHEAD_AUTH_FAILURES_PER_MINUTE_PER_ORG", "must not be negative, got %d", c.AuthFailuresPerMinutePerOrg)
	}
	if n := len(c.JWTHS256Secret); n > 0 && n < 32 {
		bad("BULKHEAD_JWT_HS256_SECRET", "must be at least 32 bytes, got %d", n)
	}
	if c.JWTRateLimitPerMinute < 0 {
		bad("BULKHEAD_JWT_RATE_LIMIT_PER_MINUTE", "must not be negative, got %d", c.JWTRateLimitPerMinute)
	}
	if c.JWTTokensPerMinute < 0 {
		bad("BULKHEAD_JWT_TOKENS_PER_MINUTE", "must not be negative, got %d", c.JWTTokensPerMinute)
	}
	if c.TPMDefaultCompletionEstimate < 0 {
		bad("BULKHEAD_TPM_DEFAULT_COMPLETION_ESTIMATE", "must not be negative, got %d", c.TPMDefaultCompletionEstimate)
	}
	if c.JWTLeeway < 0 || c.JWTLeeway > 5*time.Minute {
		bad("BULKHEAD_JWT_LEEWAY", "must be between 0s and 5m, got %s", c.JWTLeeway)
	}
	checkURL("BULKHEAD_UPSTREAM_URL", c.UpstreamURL, "http", "https")
	positive("BULKHEAD_UPSTREAM_CONNECT_TIMEOUT", c.UpstreamConnectTimeout)
	positive("BULKHEAD_UPSTREAM_FIRST_BYTE_TIMEOUT", c.UpstreamFirstByteTimeout)
	positive("BULKHEAD_UPSTREAM_IDLE_TIMEOUT", c.UpstreamIdleTimeout)
	positive("BULKHEAD_UPSTREAM_TIMEOUT", c.UpstreamTimeout)
	if c.UpstreamMaxConns < 1 {
		bad("BULKHEAD_UPSTREAM_MAX_CONNS", "must be at least 1, got %d", c.UpstreamMaxConns)
	}
	if c.SpoolMaxBytes < 1<<20 {
		bad("BULKHEAD_SPOOL_MAX_BYTES", "must be at least 1 MiB, got %d", c.SpoolMaxBytes)
	}
	if c.SpoolFsync != "batch" && c.SpoolFsync != "interval" && c.SpoolFsync != "never" {
		bad("BULKHEAD_SPOOL_FSYNC", "want interval, batch or never, got %q", c.SpoolFsync)
	}
	if c.CaptureMaxBytes < 0 {
		bad("BULKHEAD_CAPTURE_MAX_BYTES", "must not be negative, got %d", c.CaptureMaxBytes)
	}
	names, models := map[string]bool{}, map[string]string{}
	for i, u := range c.Upstreams {
		at := func(field string) string { return fmt.Sprintf("upstreams[%d].%s", i, field) }
		if u.Name == "" || names[u.Name] {
			bad(at("name"), "must be set and unique, got %q", u.Name)
		}
		names[u.Name] = true
		if u.Kind != "openai" && u.Kind != "azure" {
			bad(at("kind"), "want openai or azure, got %q", u.Kind)
		}
		checkURL(at("url"), u.URL, "http", "https")
		if u.Kind == "azure" && u.APIVersion == "" {
			bad(at("api_version"), "is required for azure")
		}
		if len(u.Models) == 0 {
			bad(at("models"), "must name at least one model")
		}
		for _, m := range u.Models {
			if m == "" || m == "*" {
				bad(at("models"), "%q is not a model name or prefix", m)
			} else if other, dup := models[m]; dup {
				bad(at("models"), "%q is already routed to %s", m, other)
			}
			models[m] = u.Name
		}
	}
	if c.MaxRequestBodyBytes < 1024 {
		bad("BULKHEAD_MAX_REQUEST_BODY_BYTES", "must be at least 1024, got %d", c.MaxRequestBodyBytes)
	}
	positive("BULKHEAD_SHUTDOWN_TIMEOUT", c.ShutdownTimeout)
	if c.ShutdownGrace < 0 {
		bad("BULKHEAD_SHUTDOWN_GRACE", "must not be negative, got %s", c.ShutdownGrace)
	}
	if _, err := zapcore.ParseLevel(c.LogLevel); err != nil || c.LogLevel == "" {
		bad("BULKHEAD_LOG_LEVEL", "want debug, info, warn or error, got %q", c.LogLevel)
	}
	if c.LogFormat != "json" && c.LogFormat != "console" {
		bad("BULKHEAD_LOG_FORMAT", "want json or console, got %q", c.LogFormat)
	}
	return errors.Join(errs...)
}
