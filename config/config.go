// Package config holds Bulkhead's one Config struct: its defaults, loading
// from an optional YAML file and BULKHEAD_* environment variables, and
// validation.
//
// Every setting is declared once, as a field of Config whose tags carry the
// YAML key, the environment variable and a one-line meaning; its default
// is written once, in Default. A setting that configures another
// package's option (the key caches of gateway/auth, the Redis deadline of
// ratelimit, the spool cap of store) defaults to that package's exported
// Default* constant, so config imports those packages and they never
// import config. The README's configuration table is generated from Vars
// and checked by a test.
//
// Precedence, lowest first: Default, the YAML file, the environment.
// Loading has no side effects beyond reading the file.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/gateway/memory"
	"github.com/bulkheadhq/bulkhead/ratelimit"
	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/seal"
	"github.com/bulkheadhq/bulkhead/store/spool"
)

// Config is the whole configuration of a Bulkhead process. The zero value
// is not useful; obtain one from Default or Load.
type Config struct {
	Listen      string `yaml:"listen" env:"BULKHEAD_LISTEN" help:"address of the OpenAI-compatible API"`
	AdminListen string `yaml:"admin_listen" env:"BULKHEAD_ADMIN_LISTEN" help:"address of the admin listener (health, metrics, pprof); keep it private"`
	// ControlListen empty: no control plane, and serve holds no owner
	// connection.
	ControlListen     string        `yaml:"control_listen" env:"BULKHEAD_CONTROL_LISTEN" help:"address of the control plane: the admin API under /admin/v1/ and the web console at /, authenticated by operator tokens (bulkhead admin-token) and tenant administrators' JWTs; it connects as the owner role (BULKHEAD_ADMIN_DATABASE_URL); keep it private; empty disables it"`
	ControlSessionTTL time.Duration `yaml:"control_session_ttl" env:"BULKHEAD_CONTROL_SESSION_TTL" help:"lifetime of a console session from its login (never beyond a tenant administrator's JWT expiry); sessions live in Redis when there is one (every replica knows them, a restart keeps them, a logout ends them everywhere), else in the serving process's memory"`
	// The control listener's failure budgets (gateway/control/throttle.go).
	ControlFailuresPerMinutePerAddress int `yaml:"control_failures_per_minute_per_address" env:"BULKHEAD_CONTROL_FAILURES_PER_MINUTE_PER_ADDRESS" help:"refused credentials (logins and bearers: operator tokens, admin keys, JWTs, sessions) per minute per client address on the control listener, a minute's worth at once; past it that address gets 429 with Retry-After before any check. Counted in Redis across replicas when there is one (0: no limit)"`
	ControlFailuresPerMinutePerPrefix  int `yaml:"control_failures_per_minute_per_prefix" env:"BULKHEAD_CONTROL_FAILURES_PER_MINUTE_PER_PREFIX" help:"the same per credential prefix, all addresses together: an operator token's first 16 characters, an admin key's organization; while it is spent, credentials with that prefix get 429 (0: no limit)"`

	DatabaseURL      Secret `yaml:"database_url" env:"BULKHEAD_DATABASE_URL" help:"PostgreSQL DSN of the runtime app role (no superuser, no BYPASSRLS, owns nothing)"`
	AdminDatabaseURL Secret `yaml:"admin_database_url" env:"BULKHEAD_ADMIN_DATABASE_URL" help:"PostgreSQL DSN of the owner role, used only by migrate and the admin subcommands"`
	DatabaseMaxConns int32  `yaml:"database_max_conns" env:"BULKHEAD_DATABASE_MAX_CONNS" help:"size of the runtime connection pool"`

	DatabasePreparedStatements bool `yaml:"database_prepared_statements" env:"BULKHEAD_DATABASE_PREPARED_STATEMENTS" help:"prepare the runtime's statements once per connection (named server-side prepared statements); set false when BULKHEAD_DATABASE_URL names a pooler in transaction mode that does not keep them per server connection, such as PgBouncer before 1.21 or with max_prepared_statements = 0: queries then run as the unnamed statement and the request-log writer prepares its statements per transaction (see deploy/README.md)"`

	RedisURL  Secret `yaml:"redis_url" env:"BULKHEAD_REDIS_URL" help:"Redis shared by all replicas for key cache, revocation and limits; set it empty for single-instance mode (in-process cache and limiter). For a cluster or Sentinel, several addresses: redis://[user:password@]host:port?addr=host2:port&addr=host3:port (see BULKHEAD_REDIS_MODE)"`
	RedisMode string `yaml:"redis_mode" env:"BULKHEAD_REDIS_MODE" help:"single (one Redis node), cluster (Redis Cluster: the URL names some of its nodes, database 0 only) or sentinel (the URL names the Sentinels, with ?master_name=NAME; its user and password are the Sentinels', the master's go in &username= and &password=); reads and writes always go to masters"`

	RedisTimeout time.Duration `yaml:"redis_timeout" env:"BULKHEAD_REDIS_TIMEOUT" help:"deadline of every Redis call; past it the gateway falls back (caches, PostgreSQL, local limiter) instead of waiting"`

	AuthCacheTTL          time.Duration `yaml:"auth_cache_ttl" env:"BULKHEAD_AUTH_CACHE_TTL" help:"absolute lifetime of a verified key in the in-process cache: the bound on staleness when a revocation event is missed"`
	AuthCacheSize         int           `yaml:"auth_cache_size" env:"BULKHEAD_AUTH_CACHE_SIZE" help:"maximum entries in the in-process key cache"`
	AuthNegativeCacheTTL  time.Duration `yaml:"auth_negative_cache_ttl" env:"BULKHEAD_AUTH_NEGATIVE_CACHE_TTL" help:"how long an unknown or revoked key is remembered in process, so floods of bad keys never reach Redis or PostgreSQL"`
	AuthNegativeCacheSize int           `yaml:"auth_negative_cache_size" env:"BULKHEAD_AUTH_NEGATIVE_CACHE_SIZE" help:"maximum entries in the in-process negative cache"`
	AuthRedisTTL          time.Duration `yaml:"auth_redis_ttl" env:"BULKHEAD_AUTH_REDIS_TTL" help:"lifetime of a key's entry in Redis (the shared second-level cache)"`

	AuthFailuresPerMinutePerAddress int `yaml:"auth_failures_per_minute_per_address" env:"BULKHEAD_AUTH_FAILURES_PER_MINUTE_PER_ADDRESS" help:"failed API-key look-ups (keys PostgreSQL finds unknown, revoked or expired) per minute per client address, a minute's worth at once; past it, keys that no cache knows get 429 without a database look-up. The address is the TCP peer (IPv6: its /64), so behind a proxy it is the proxy's: raise it there (0: no limit)"`
	AuthFailuresPerMinutePerOrg     int `yaml:"auth_failures_per_minute_per_org" env:"BULKHEAD_AUTH_FAILURES_PER_MINUTE_PER_ORG" help:"the same per organization named by the keys, all addresses together; while it is spent the organization's keys cached in process or in Redis keep working and keys that no cache knows get 429 (0: no limit)"`

	JWTHS256Secret        Secret        `yaml:"jwt_hs256_secret" env:"BULKHEAD_JWT_HS256_SECRET" help:"shared secret for HS256 JWTs (at least 32 bytes); empty disables HS256"`
	JWTPublicKeyFile      string        `yaml:"jwt_public_key_file" env:"BULKHEAD_JWT_PUBLIC_KEY_FILE" help:"PEM file with the RSA (RS256) or P-256 (ES256) public key that verifies JWTs; empty disables them"`
	JWTIssuer             string        `yaml:"jwt_issuer" env:"BULKHEAD_JWT_ISSUER" help:"required iss claim of JWTs; empty accepts any issuer"`
	JWTAudience           string        `yaml:"jwt_audience" env:"BULKHEAD_JWT_AUDIENCE" help:"required aud claim of JWTs; empty accepts any audience"`
	JWTRateLimitPerMinute int           `yaml:"jwt_rate_limit_per_minute" env:"BULKHEAD_JWT_RATE_LIMIT_PER_MINUTE" help:"requests per minute of each organization's JWT callers together (0: no limit)"`
	JWTTokensPerMinute    int           `yaml:"jwt_tokens_per_minute" env:"BULKHEAD_JWT_TOKENS_PER_MINUTE" help:"tokens per minute of each organization's JWT callers together (0: no limit)"`
	RateLimitLease        bool          `yaml:"rate_limit_lease" env:"BULKHEAD_RATE_LIMIT_LEASE" help:"let each replica take a slice (1/64) of a busy key's request budget from Redis at once and admit from it locally; never admits more than the budget, may admit slightly fewer (see ratelimit docs); keys under 128 rpm are always decided in Redis"`
	RateLimitFailClosed   bool          `yaml:"rate_limit_fail_closed" env:"BULKHEAD_RATE_LIMIT_FAIL_CLOSED" help:"while Redis is unreachable, answer 503 instead of falling back to each instance's local limiter (which admits its share of each budget, see ratelimit docs)"`
	JWTLeeway             time.Duration `yaml:"jwt_leeway" env:"BULKHEAD_JWT_LEEWAY" help:"clock skew tolerated on exp, nbf and iat"`

	TPMDefaultCompletionEstimate int `yaml:"tpm_default_completion_estimate" env:"BULKHEAD_TPM_DEFAULT_COMPLETION_ESTIMATE" help:"completion tokens set aside from a key's tokens-per-minute budget, on top of the prompt's estimate, for a request that sets no max_tokens (max_completion_tokens, max_output_tokens); the actual usage replaces the estimate when the answer ends"`

	UpstreamURL    string `yaml:"upstream_url" env:"BULKHEAD_UPSTREAM_URL" help:"base URL of the default OpenAI-compatible upstream, as an SDK's base URL (the dev default is the mock upstream)"`
	UpstreamAPIKey Secret `yaml:"upstream_api_key" env:"BULKHEAD_UPSTREAM_API_KEY" help:"provider credential sent to the default upstream; never shown to callers"`

	UpstreamConnectTimeout    time.Duration `yaml:"upstream_connect_timeout" env:"BULKHEAD_UPSTREAM_CONNECT_TIMEOUT" help:"deadline for dialling an upstream"`
	UpstreamFirstByteTimeout  time.Duration `yaml:"upstream_first_byte_timeout" env:"BULKHEAD_UPSTREAM_FIRST_BYTE_TIMEOUT" help:"deadline for the upstream's first response byte after the request is sent (a non-streaming completion must be generated within it)"`
	UpstreamIdleTimeout       time.Duration `yaml:"upstream_idle_timeout" env:"BULKHEAD_UPSTREAM_IDLE_TIMEOUT" help:"longest silence between two reads of an upstream response, e.g. between stream events"`
	UpstreamTimeout           time.Duration `yaml:"upstream_timeout" env:"BULKHEAD_UPSTREAM_TIMEOUT" help:"deadline for a whole upstream exchange, stream included"`
	UpstreamMaxConns          int           `yaml:"upstream_max_conns" env:"BULKHEAD_UPSTREAM_MAX_CONNS" help:"open connections per upstream host; further requests wait up to the first-byte timeout"`
	UpstreamMaxAttempts       int           `yaml:"upstream_max_attempts" env:"BULKHEAD_UPSTREAM_MAX_ATTEMPTS" help:"most upstream attempts per request, the first included: before the first byte of an answer reaches the caller, a connect error, a timeout, a 429 or a 5xx moves the request to the route's next upstream (its fallbacks, then round again); 1 never retries"`
	UpstreamRetryBackoff      time.Duration `yaml:"upstream_retry_backoff" env:"BULKHEAD_UPSTREAM_RETRY_BACKOFF" help:"wait before trying an upstream again that this request already tried, doubled at each round and jittered (50% to 150%); never past BULKHEAD_UPSTREAM_TIMEOUT, which bounds all attempts together; a fallback not yet tried is called at once"`
	UpstreamBreakerFailures   int           `yaml:"upstream_breaker_failures" env:"BULKHEAD_UPSTREAM_BREAKER_FAILURES" help:"consecutive failures (connect errors, timeouts, 429, 5xx) after which an upstream's circuit opens: it gets no requests (its fallbacks do) until BULKHEAD_UPSTREAM_BREAKER_COOLDOWN has passed, then one probe at a time until one succeeds; 0 never opens"`
	UpstreamBreakerCooldown   time.Duration `yaml:"upstream_breaker_cooldown" env:"BULKHEAD_UPSTREAM_BREAKER_COOLDOWN" help:"how long an upstream's open circuit stays open before it lets a probe request through"`
	AnthropicDefaultMaxTokens int           `yaml:"anthropic_default_max_tokens" env:"BULKHEAD_ANTHROPIC_DEFAULT_MAX_TOKENS" help:"max_tokens sent to an Anthropic model for a chat completions request that sets neither max_tokens nor max_completion_tokens (Anthropic requires one; OpenAI does not)"`
	CaptureMaxBytes           int           `yaml:"capture_max_bytes" env:"BULKHEAD_CAPTURE_MAX_BYTES" help:"most response text kept per request for the request log; longer text is truncated, usage is still exact"`

	// Upstreams routes models to providers other than the default upstream.
	// YAML only; each credential comes from the environment variable its
	// api_key_env names.
	Upstreams []Upstream `yaml:"upstreams"`
	// AzureDeployments maps the deployment names that Azure OpenAI clients
	// put in their paths (/openai/deployments/NAME/...) to the models the
	// gateway routes; a deployment not named here is taken as a model of
	// the same name. YAML only.
	AzureDeployments map[string]string `yaml:"azure_deployments"`
	// DatabaseTargets names the databases organizations may be placed on
	// (placement database:NAME), each with the variables holding its
	// DSNs. YAML only (targets.go).
	DatabaseTargets map[string]DatabaseTarget `yaml:"database_targets"`

	ModelAccessDefault string        `yaml:"model_access_default" env:"BULKHEAD_MODEL_ACCESS_DEFAULT" help:"which shared models of the catalog (bulkhead model add) an organization may use without a grant or revocation of its own (bulkhead model grant, model revoke): all, or none (then only granted shared models and its own are served, and models outside the catalog are not)"`
	ModelCacheTTL      time.Duration `yaml:"model_cache_ttl" env:"BULKHEAD_MODEL_CACHE_TTL" help:"how long a gateway reuses what it read of an organization's models and access before reading them again: the bound on staleness when a catalog change's Redis event is missed (changes are otherwise applied at once)"`

	BudgetWebhookURL    string `yaml:"budget_webhook_url" env:"BULKHEAD_BUDGET_WEBHOOK_URL" help:"http(s) URL that receives a POST (JSON, signed: X-Bulkhead-Signature t=UNIX,v1=HMAC-SHA256 of UNIX.BODY under BULKHEAD_BUDGET_WEBHOOK_SECRET) when a dollar budget reaches one of its soft thresholds (bulkhead budget set --alert-at), at most once per threshold and window across replicas, retried with backoff; empty: the metric bulkhead_budget_alerts_total alone"`
	BudgetWebhookSecret Secret `yaml:"budget_webhook_secret" env:"BULKHEAD_BUDGET_WEBHOOK_SECRET" help:"the HMAC key of the budget webhook's signature, at least 16 bytes; required with BULKHEAD_BUDGET_WEBHOOK_URL"`

	RequestLog    bool   `yaml:"request_log" env:"BULKHEAD_REQUEST_LOG" help:"write every request to the prompts table; false keeps only the access log line (for benchmarks and debugging, not for production)"`
	SpoolDir      string `yaml:"spool_dir" env:"BULKHEAD_SPOOL_DIR" help:"directory of the request log's disk spool, which keeps every record through a PostgreSQL outage or a restart; one per replica; empty disables it (records then wait in memory)"`
	SpoolMaxBytes int64  `yaml:"spool_max_bytes" env:"BULKHEAD_SPOOL_MAX_BYTES" help:"spool size at which new requests get 503 rather than risk a record"`
	SpoolFsync    string `yaml:"spool_fsync" env:"BULKHEAD_SPOOL_FSYNC" help:"when the request log's journal and spool reach the disk: interval (written before each answer is sent, fsynced every second: a machine crash may lose the last second), batch (fsynced before each answer is sent; costs an fsync per group of concurrent requests) or never (left to the kernel); a process crash loses nothing under any of them"`

	Retention         string        `yaml:"retention" env:"BULKHEAD_RETENTION" help:"the installation's default retention of the request log: 30d (days), or forever (also empty); organizations may have their own (org update --retention). Recorded in the database by bulkhead migrate and bulkhead retention run (owner role); the gateways apply what is recorded"`
	RetentionInterval time.Duration `yaml:"retention_interval" env:"BULKHEAD_RETENTION_INTERVAL" help:"how often each gateway applies the recorded retentions (dropping whole days, deleting the rest in audited steps); 0 never"`

	SealKeysetFile   string        `yaml:"seal_keyset_file" env:"BULKHEAD_SEAL_KEYSET_FILE" help:"file holding the key-encryption key (KEK) that wraps every sealed organization's data keys: a Tink JSON keyset, written by bulkhead key-encryption init, mode 0600; re-read when a data key does not unwrap (after key-encryption rotate). Empty: none, unless BULKHEAD_SEAL_KEYSET is set. With a KEK, new organizations are sealed by default"`
	SealKeyset       Secret        `yaml:"seal_keyset" env:"BULKHEAD_SEAL_KEYSET" help:"the KEK's Tink JSON keyset itself, for a secret store that fills variables; ignored when BULKHEAD_SEAL_KEYSET_FILE is set"`
	SealKeyCacheTTL  time.Duration `yaml:"seal_key_cache_ttl" env:"BULKHEAD_SEAL_KEY_CACHE_TTL" help:"how long an organization's unwrapped data keys and sealed flag stay in process; org update --seal on reaches running writers within it (until then its rows are written without text, never in clear)"`
	SealKeyCacheSize int           `yaml:"seal_key_cache_size" env:"BULKHEAD_SEAL_KEY_CACHE_SIZE" help:"most organizations whose unwrapped data keys are kept in process"`

	MemoryLimit       string        `yaml:"memory_limit" env:"BULKHEAD_MEMORY_LIMIT" help:"soft limit of the Go runtime's memory, a size written as for GOMEMLIMIT (512MiB; units B, KiB, MiB, GiB, TiB): nearing it the garbage collector runs more often and returns freed memory at once. It is soft: set it some 10% below the container's memory limit. Empty: GOMEMLIMIT if set, else no limit"`
	MemoryReturnAfter time.Duration `yaml:"memory_return_after" env:"BULKHEAD_MEMORY_RETURN_AFTER" help:"after a busy spell, once the garbage collector has not run for this long, collect once more and return the freed heap to the OS, so that a burst's memory does not stay resident until Go's own forced collection two minutes later; 0 leaves it to the Go runtime"`

	MaxRequestBodyBytes int           `yaml:"max_request_body_bytes" env:"BULKHEAD_MAX_REQUEST_BODY_BYTES" help:"largest request body accepted; larger bodies get 413"`
	ShutdownTimeout     time.Duration `yaml:"shutdown_timeout" env:"BULKHEAD_SHUTDOWN_TIMEOUT" help:"how long in-flight requests may take to finish after SIGTERM"`

	ShutdownGrace    time.Duration `yaml:"shutdown_grace" env:"BULKHEAD_SHUTDOWN_GRACE" help:"after SIGTERM, how long the gateway keeps accepting connections while reporting not ready, so load balancers stop sending first (5s behind a Kubernetes Service)"`
	MetricsPerTenant bool          `yaml:"metrics_per_tenant" env:"BULKHEAD_METRICS_PER_TENANT" help:"add a per-organization request counter (one series per tenant: mind the cardinality)"`

	OTelExporterOTLPEndpoint string `yaml:"otel_exporter_otlp_endpoint" env:"BULKHEAD_OTEL_EXPORTER_OTLP_ENDPOINT" help:"OTLP/HTTP base URL of an OpenTelemetry collector (http://collector:4318; spans go to its /v1/traces): every request then has a trace (server span; auth, admission and upstream attempt spans; GenAI attributes; a caller's traceparent continued). Empty: tracing is on only when the standard OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set (the exporter reads the other OTEL_EXPORTER_OTLP_* variables, the SDK OTEL_TRACES_SAMPLER and OTEL_SERVICE_NAME); off, it costs nothing. OTEL_SDK_DISABLED=true turns it off"`
	OTelTenantAttribute      bool   `yaml:"otel_tenant_attribute" env:"BULKHEAD_OTEL_TENANT_ATTRIBUTE" help:"put the organization id on each request's server span (bulkhead.tenant.id); off by default, since traces often leave the installation's trust boundary. Prompt text, keys and tokens are never on spans"`
	// OTelStandardEnv is set by Load when the standard OTEL_* variables
	// ask for trace export (see OTelExporterOTLPEndpoint).
	OTelStandardEnv bool `yaml:"-"`
	// OTelDisabled is set by Load from OTEL_SDK_DISABLED=true.
	OTelDisabled bool `yaml:"-"`

	LogLevel  string `yaml:"log_level" env:"BULKHEAD_LOG_LEVEL" help:"debug, info, warn or error"`
	LogFormat string `yaml:"log_format" env:"BULKHEAD_LOG_FORMAT" help:"json or console; logs go to stderr, json buffered (256 KiB, written at least every second and at exit), console line by line"`
}

// Upstream is a provider that serves some models.
type Upstream struct {
	Name string `yaml:"name"`
	// Kind is "openai" (any OpenAI-compatible server: OpenAI, vLLM,
	// Ollama, ...), "azure" (Azure OpenAI: deployment paths, api-version,
	// api-key header) or "anthropic" (Anthropic's Messages API, served on
	// /v1/messages: x-api-key header, anthropic-version).
	Kind string `yaml:"kind"`
	// URL is the base URL: for openai as an SDK's base URL
	// ("https://api.openai.com/v1"), for azure the resource endpoint
	// ("https://NAME.openai.azure.com"), for anthropic as its SDK's base
	// URL, without /v1 ("https://api.anthropic.com").
	URL string `yaml:"url"`
	// APIKeyEnv names the environment variable holding the credential.
	APIKeyEnv string `yaml:"api_key_env"`
	// APIKey is resolved from APIKeyEnv by Load.
	APIKey Secret `yaml:"-"`
	// APIVersion is Azure's api-version query parameter; for anthropic the
	// anthropic-version header sent when the caller sends none
	// (2023-06-01 by default).
	APIVersion string `yaml:"api_version"`
	// Models this upstream serves: exact names, or prefixes ending in "*".
	Models []string `yaml:"models"`
	// Deployments maps a model to its Azure deployment name; by default
	// the deployment is named like the model.
	Deployments map[string]string `yaml:"deployments"`
	// Fallbacks names, in order, the upstreams that take this upstream's
	// requests when it fails before answering (see
	// BULKHEAD_UPSTREAM_MAX_ATTEMPTS) or while its circuit is open:
	// names of other entries, or "default" for BULKHEAD_UPSTREAM_URL. Only
	// the routed upstream's own list is used (a fallback's fallbacks are
	// not followed), so lists cannot chain into loops.
	Fallbacks []string `yaml:"fallbacks"`
}

// Values of ModelAccessDefault.
const (
	ModelAccessAll  = "all"  // every shared model unless revoked
	ModelAccessNone = "none" // only granted shared models
)

// DefaultUpstreamName is the name of the upstream BULKHEAD_UPSTREAM_URL
// configures, as the model catalog names it.
const DefaultUpstreamName = "default"

// UpstreamNames lists the names the model catalog may route to: each of
// Upstreams, and DefaultUpstreamName when UpstreamURL is set (an upstream
// of Upstreams so named takes precedence over it).
func (c Config) UpstreamNames() []string {
	var names []string
	if c.UpstreamURL != "" {
		names = append(names, DefaultUpstreamName)
	}
	for _, u := range c.Upstreams {
		if u.Name != DefaultUpstreamName || c.UpstreamURL == "" {
			names = append(names, u.Name)
		}
	}
	return names
}

// Default returns the configuration made of the defaults alone. Every
// setting's default is written here and nowhere else; where a package
// owns the option a setting configures, the default is that package's
// constant.
func Default() Config {
	return Config{
		Listen:      ":8080",
		AdminListen: "127.0.0.1:9090",

		ControlListen:     "127.0.0.1:9091",
		ControlSessionTTL: 30 * time.Minute,

		ControlFailuresPerMinutePerAddress: 30,
		ControlFailuresPerMinutePerPrefix:  10,

		DatabaseURL:      "postgres://bulkhead_app:bulkhead@127.0.0.1:5432/bulkhead?sslmode=disable",
		AdminDatabaseURL: "postgres://bulkhead_owner:bulkhead@127.0.0.1:5432/bulkhead?sslmode=disable",
		DatabaseMaxConns: 10,

		DatabasePreparedStatements: true,

		RedisURL:     "redis://127.0.0.1:6379/0",
		RedisMode:    RedisSingle,
		RedisTimeout: ratelimit.DefaultTimeout,

		AuthCacheTTL:          auth.DefaultCacheTTL,
		AuthCacheSize:         auth.DefaultCacheSize,
		AuthNegativeCacheTTL:  auth.DefaultNegativeTTL,
		AuthNegativeCacheSize: auth.DefaultNegativeSize,
		AuthRedisTTL:          auth.DefaultRedisTTL,

		AuthFailuresPerMinutePerAddress: 60,
		AuthFailuresPerMinutePerOrg:     600,

		JWTHS256Secret:        "",
		JWTPublicKeyFile:      "",
		JWTIssuer:             "",
		JWTAudience:           "",
		JWTRateLimitPerMinute: 600,
		JWTTokensPerMinute:    0,
		RateLimitLease:        true,
		RateLimitFailClosed:   false,
		JWTLeeway:             30 * time.Second,

		TPMDefaultCompletionEstimate: 256,

		UpstreamURL:    "http://127.0.0.1:8081/v1",
		UpstreamAPIKey: "",

		UpstreamConnectTimeout:   5 * time.Second,
		UpstreamFirstByteTimeout: 120 * time.Second,
		UpstreamIdleTimeout:      60 * time.Second,
		UpstreamTimeout:          10 * time.Minute,
		UpstreamMaxConns:         1024,
		UpstreamMaxAttempts:      3,
		UpstreamRetryBackoff:     100 * time.Millisecond,
		UpstreamBreakerFailures:  5,
		UpstreamBreakerCooldown:  30 * time.Second,
		CaptureMaxBytes:          1 << 20,

		AnthropicDefaultMaxTokens: 4096,

		ModelAccessDefault: ModelAccessAll,
		ModelCacheTTL:      30 * time.Second,

		RequestLog:    true,
		SpoolDir:      ".run/spool",
		SpoolMaxBytes: store.DefaultSpoolMaxBytes,
		SpoolFsync:    spool.SyncInterval.String(),

		Retention:         "",
		RetentionInterval: time.Hour,

		SealKeyCacheTTL:  store.DefaultSealKeyCacheTTL,
		SealKeyCacheSize: store.DefaultSealKeyCacheSize,

		MemoryLimit:       "",
		MemoryReturnAfter: memory.DefaultQuiet,

		MaxRequestBodyBytes: 4 << 20,
		ShutdownTimeout:     30 * time.Second,

		ShutdownGrace:    0,
		MetricsPerTenant: false,

		LogLevel:  "info",
		LogFormat: "json",
	}
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
	def := reflect.ValueOf(Default())
	t := def.Type()
	vars := make([]Var, 0, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Tag.Get("env") == "" {
			continue
		}
		vars = append(vars, Var{
			Env:     f.Tag.Get("env"),
			YAML:    f.Tag.Get("yaml"),
			Default: formatField(def.Field(i)),
			Help:    f.Tag.Get("help"),
		})
	}
	return vars
}

// formatField writes a setting's value as the environment would set it:
// the inverse of setField. A Secret is written as it is.
func formatField(f reflect.Value) string {
	if f.Type() == durationType {
		// time.Duration's form without zero trailing units: 5m, not 5m0s.
		s := time.Duration(f.Int()).String()
		if strings.HasSuffix(s, "m0s") {
			s = strings.TrimSuffix(s, "0s")
		}
		if strings.HasSuffix(s, "h0m") {
			s = strings.TrimSuffix(s, "0m")
		}
		return s
	}
	switch f.Kind() {
	case reflect.String:
		return f.String() // not fmt: a Secret would redact itself
	case reflect.Int, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(f.Int(), 10)
	case reflect.Bool:
		return strconv.FormatBool(f.Bool())
	case reflect.Float64:
		return strconv.FormatFloat(f.Float(), 'g', -1, 64)
	}
	panic("config: unsupported setting type " + f.Type().String())
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
	errs = append(errs, c.resolveTargets(lookupEnv)...)
	c.readOTelEnv(lookupEnv)
	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// readOTelEnv notes whether the standard OpenTelemetry variables ask for
// trace export, or turn the SDK off.
func (c *Config) readOTelEnv(lookupEnv func(string) (string, bool)) {
	set := func(name string) bool { v, ok := lookupEnv(name); return ok && v != "" }
	c.OTelStandardEnv = set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if v, ok := lookupEnv("OTEL_TRACES_EXPORTER"); ok && strings.TrimSpace(v) == "none" {
		c.OTelStandardEnv = false
	}
	if v, ok := lookupEnv("OTEL_SDK_DISABLED"); ok && strings.EqualFold(strings.TrimSpace(v), "true") {
		c.OTelDisabled = true
	}
}

// Tracing reports whether requests are traced and exported by OTLP.
func (c Config) Tracing() bool {
	return !c.OTelDisabled && (c.OTelExporterOTLPEndpoint != "" || c.OTelStandardEnv)
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

// SpoolSyncPolicy is SpoolFsync as the spool's policy. Validate has
// checked the name; an unknown one gives spool.SyncBatch, the strictest.
func (c Config) SpoolSyncPolicy() spool.SyncPolicy {
	p, err := spool.ParseSyncPolicy(c.SpoolFsync)
	if err != nil {
		return spool.SyncBatch
	}
	return p
}

// minMemoryLimit is the lowest BULKHEAD_MEMORY_LIMIT accepted: the
// gateway idles at about 25 MiB, and a lower limit is most likely a
// number written without its unit.
const minMemoryLimit = 32 << 20

// MemoryLimitBytes is MemoryLimit in bytes, 0 if it is empty (then
// GOMEMLIMIT, or no limit, applies). Validate has checked it; an invalid
// one gives 0.
func (c Config) MemoryLimitBytes() int64 {
	n, err := ParseSize(c.MemoryLimit)
	if err != nil {
		return 0
	}
	return n
}

// ParseSize parses a byte count written as for GOMEMLIMIT: a
// non-negative integer with an optional unit, B, KiB, MiB, GiB or TiB
// ("512MiB", "1GiB", "268435456"). The empty string is 0.
func ParseSize(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	digits := strings.TrimRight(s, "BKMGTi")
	unit := s[len(digits):]
	shift, ok := map[string]uint{"": 0, "B": 0, "KiB": 10, "MiB": 20, "GiB": 30, "TiB": 40}[unit]
	if !ok || digits == "" || strings.TrimLeft(digits, "0123456789") != "" {
		return 0, fmt.Errorf("not a size like 512MiB: %q", s)
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("size out of range: %q", s)
	}
	return n << shift, nil
}

// SealKEK loads the key-encryption key the configuration names: the file
// (re-read when a data key does not unwrap), else the keyset variable;
// nil when neither is set. Loading reads the file: it belongs to run, not
// to Validate, which has no side effects.
func (c Config) SealKEK() (seal.KEK, error) {
	switch {
	case c.SealKeysetFile != "":
		k, err := seal.OpenFileKEK(c.SealKeysetFile)
		if err != nil {
			return nil, fmt.Errorf("BULKHEAD_SEAL_KEYSET_FILE: %w", err)
		}
		return k, nil
	case c.SealKeyset != "":
		k, err := seal.ParseLocalKEK([]byte(c.SealKeyset.Reveal()))
		if err != nil {
			return nil, fmt.Errorf("BULKHEAD_SEAL_KEYSET: %w", err)
		}
		return k, nil
	}
	return nil, nil
}
