package config

import (
	"strings"
	"testing"
	"time"
)

// Every rejection branch of Validate: one bad value in an otherwise
// default configuration gives exactly one problem, naming its variable.
func TestValidateRejects(t *testing.T) {
	up := func(mod func(*Upstream)) func(*Config) {
		return func(c *Config) {
			u := Upstream{Name: "a", Kind: "openai", URL: "https://api.example.com/v1", Models: []string{"m"}}
			mod(&u)
			c.Upstreams = []Upstream{u}
		}
	}
	cases := []struct {
		name string
		mod  func(*Config)
		want string // the problem's prefix: the variable
	}{
		{"listen without port", func(c *Config) { c.Listen = "localhost" }, "BULKHEAD_LISTEN:"},
		{"admin listen empty port", func(c *Config) { c.AdminListen = "127.0.0.1:" }, "BULKHEAD_ADMIN_LISTEN:"},
		{"database URL not a URL", func(c *Config) { c.DatabaseURL = "host=db user=app" }, "BULKHEAD_DATABASE_URL:"},
		{"database URL scheme", func(c *Config) { c.DatabaseURL = "mysql://db:3306/x" }, "BULKHEAD_DATABASE_URL:"},
		{"admin database URL", func(c *Config) { c.AdminDatabaseURL = "http://db/x" }, "BULKHEAD_ADMIN_DATABASE_URL:"},
		{"max conns", func(c *Config) { c.DatabaseMaxConns = 0 }, "BULKHEAD_DATABASE_MAX_CONNS:"},
		{"redis scheme", func(c *Config) { c.RedisURL = "http://127.0.0.1:6379" }, "BULKHEAD_REDIS_URL:"},
		{"redis URL not a URL", func(c *Config) { c.RedisURL = "127.0.0.1:6379" }, "BULKHEAD_REDIS_URL:"},
		{"redis mode", func(c *Config) { c.RedisMode = "ring" }, "BULKHEAD_REDIS_MODE:"},
		{"redis mode empty", func(c *Config) { c.RedisMode = "" }, "BULKHEAD_REDIS_MODE:"},
		{"redis mode empty without redis", func(c *Config) { c.RedisMode, c.RedisURL = "", "" }, "BULKHEAD_REDIS_MODE:"},
		{"redis single with several addresses", func(c *Config) { c.RedisURL = "redis://a:6379?addr=b:6379" }, "BULKHEAD_REDIS_URL:"},
		{"redis single unknown option", func(c *Config) { c.RedisURL = "redis://a:6379?shards=3" }, "BULKHEAD_REDIS_URL:"},
		{"redis cluster database", func(c *Config) { c.RedisMode, c.RedisURL = "cluster", "redis://a:6379/2" }, "BULKHEAD_REDIS_URL:"},
		{"redis cluster unix", func(c *Config) { c.RedisMode, c.RedisURL = "cluster", "unix:///run/redis.sock" }, "BULKHEAD_REDIS_URL:"},
		{"redis cluster read only", func(c *Config) { c.RedisMode, c.RedisURL = "cluster", "redis://a:6379?read_only=true" }, "BULKHEAD_REDIS_URL:"},
		{"redis cluster by latency", func(c *Config) { c.RedisMode, c.RedisURL = "cluster", "redis://a:6379?route_by_latency=true" }, "BULKHEAD_REDIS_URL:"},
		{"redis cluster bad addr", func(c *Config) { c.RedisMode, c.RedisURL = "cluster", "redis://a:6379?addr=b" }, "BULKHEAD_REDIS_URL:"},
		{"redis sentinel without master", func(c *Config) { c.RedisMode, c.RedisURL = "sentinel", "redis://s1:26379?addr=s2:26379" }, "BULKHEAD_REDIS_URL:"},
		{"redis sentinel replica only", func(c *Config) {
			c.RedisMode, c.RedisURL = "sentinel", "redis://s1:26379?master_name=m&replica_only=true"
		}, "BULKHEAD_REDIS_URL:"},
		{"redis sentinel by latency", func(c *Config) {
			c.RedisMode, c.RedisURL = "sentinel", "redis://s1:26379?master_name=m&route_randomly=true"
		}, "BULKHEAD_REDIS_URL:"},
		{"redis timeout zero", func(c *Config) { c.RedisTimeout = 0 }, "BULKHEAD_REDIS_TIMEOUT:"},
		{"redis timeout long", func(c *Config) { c.RedisTimeout = 2 * time.Second }, "BULKHEAD_REDIS_TIMEOUT:"},
		{"auth cache ttl", func(c *Config) { c.AuthCacheTTL = -time.Second }, "BULKHEAD_AUTH_CACHE_TTL:"},
		{"negative cache ttl", func(c *Config) { c.AuthNegativeCacheTTL = 0 }, "BULKHEAD_AUTH_NEGATIVE_CACHE_TTL:"},
		{"redis ttl", func(c *Config) { c.AuthRedisTTL = 0 }, "BULKHEAD_AUTH_REDIS_TTL:"},
		{"auth cache size", func(c *Config) { c.AuthCacheSize = 0 }, "BULKHEAD_AUTH_CACHE_SIZE:"},
		{"negative cache size", func(c *Config) { c.AuthNegativeCacheSize = -1 }, "BULKHEAD_AUTH_NEGATIVE_CACHE_SIZE:"},
		{"short HS256 secret", func(c *Config) { c.JWTHS256Secret = "too-short" }, "BULKHEAD_JWT_HS256_SECRET:"},
		{"jwt rpm", func(c *Config) { c.JWTRateLimitPerMinute = -1 }, "BULKHEAD_JWT_RATE_LIMIT_PER_MINUTE:"},
		{"jwt tpm", func(c *Config) { c.JWTTokensPerMinute = -1 }, "BULKHEAD_JWT_TOKENS_PER_MINUTE:"},
		{"jwt leeway negative", func(c *Config) { c.JWTLeeway = -time.Second }, "BULKHEAD_JWT_LEEWAY:"},
		{"jwt leeway long", func(c *Config) { c.JWTLeeway = 6 * time.Minute }, "BULKHEAD_JWT_LEEWAY:"},
		{"upstream URL scheme", func(c *Config) { c.UpstreamURL = "file:///etc/passwd" }, "BULKHEAD_UPSTREAM_URL:"},
		{"connect timeout", func(c *Config) { c.UpstreamConnectTimeout = 0 }, "BULKHEAD_UPSTREAM_CONNECT_TIMEOUT:"},
		{"first byte timeout", func(c *Config) { c.UpstreamFirstByteTimeout = 0 }, "BULKHEAD_UPSTREAM_FIRST_BYTE_TIMEOUT:"},
		{"idle timeout", func(c *Config) { c.UpstreamIdleTimeout = 0 }, "BULKHEAD_UPSTREAM_IDLE_TIMEOUT:"},
		{"upstream timeout", func(c *Config) { c.UpstreamTimeout = 0 }, "BULKHEAD_UPSTREAM_TIMEOUT:"},
		{"upstream max conns", func(c *Config) { c.UpstreamMaxConns = 0 }, "BULKHEAD_UPSTREAM_MAX_CONNS:"},
		{"spool max bytes", func(c *Config) { c.SpoolMaxBytes = 1000 }, "BULKHEAD_SPOOL_MAX_BYTES:"},
		{"spool fsync", func(c *Config) { c.SpoolFsync = "always" }, "BULKHEAD_SPOOL_FSYNC:"},
		{"spool fsync empty", func(c *Config) { c.SpoolFsync = "" }, "BULKHEAD_SPOOL_FSYNC:"},
		{"spool fsync upper case", func(c *Config) { c.SpoolFsync = "Batch" }, "BULKHEAD_SPOOL_FSYNC:"},
		{"capture max bytes", func(c *Config) { c.CaptureMaxBytes = -1 }, "BULKHEAD_CAPTURE_MAX_BYTES:"},
		{"upstream name empty", up(func(u *Upstream) { u.Name = "" }), "upstreams[0].name:"},
		{"upstream kind", up(func(u *Upstream) { u.Kind = "bedrock" }), "upstreams[0].kind:"},
		{"upstream url", up(func(u *Upstream) { u.URL = "ftp://x/y" }), "upstreams[0].url:"},
		{"azure without api version", up(func(u *Upstream) { u.Kind = "azure" }), "upstreams[0].api_version:"},
		{"upstream without models", up(func(u *Upstream) { u.Models = nil }), "upstreams[0].models:"},
		{"fallback unknown", up(func(u *Upstream) { u.Fallbacks = []string{"nope"} }), "upstreams[0].fallbacks:"},
		{"fallback to itself", up(func(u *Upstream) { u.Fallbacks = []string{"a"} }), "upstreams[0].fallbacks:"},
		{"fallback twice", up(func(u *Upstream) { u.Fallbacks = []string{"default", "default"} }), "upstreams[0].fallbacks:"},
		{"upstream named default", up(func(u *Upstream) { u.Name = "default" }), "upstreams[0].name:"},
		{"anthropic falling back to OpenAI", up(func(u *Upstream) { u.Kind, u.Fallbacks = "anthropic", []string{"default"} }), "upstreams[0].fallbacks:"},
		{"azure deployment without model", func(c *Config) { c.AzureDeployments = map[string]string{"d": ""} }, "azure_deployments:"},
		{"max attempts 0", func(c *Config) { c.UpstreamMaxAttempts = 0 }, "BULKHEAD_UPSTREAM_MAX_ATTEMPTS:"},
		{"max attempts 11", func(c *Config) { c.UpstreamMaxAttempts = 11 }, "BULKHEAD_UPSTREAM_MAX_ATTEMPTS:"},
		{"otel endpoint not a URL", func(c *Config) { c.OTelExporterOTLPEndpoint = "collector:4318" }, "BULKHEAD_OTEL_EXPORTER_OTLP_ENDPOINT:"},
		{"anthropic max tokens 0", func(c *Config) { c.AnthropicDefaultMaxTokens = 0 }, "BULKHEAD_ANTHROPIC_DEFAULT_MAX_TOKENS:"},
		{"negative backoff", func(c *Config) { c.UpstreamRetryBackoff = -1 }, "BULKHEAD_UPSTREAM_RETRY_BACKOFF:"},
		{"negative breaker failures", func(c *Config) { c.UpstreamBreakerFailures = -1 }, "BULKHEAD_UPSTREAM_BREAKER_FAILURES:"},
		{"breaker cooldown 0", func(c *Config) { c.UpstreamBreakerCooldown = 0 }, "BULKHEAD_UPSTREAM_BREAKER_COOLDOWN:"},
		{"upstream wildcard model", up(func(u *Upstream) { u.Models = []string{"*"} }), "upstreams[0].models:"},
		{"memory limit unit", func(c *Config) { c.MemoryLimit = "512MB" }, "BULKHEAD_MEMORY_LIMIT:"},
		{"memory limit without unit", func(c *Config) { c.MemoryLimit = "512" }, "BULKHEAD_MEMORY_LIMIT:"},
		{"memory return after short", func(c *Config) { c.MemoryReturnAfter = 100 * time.Millisecond }, "BULKHEAD_MEMORY_RETURN_AFTER:"},
		{"memory return after negative", func(c *Config) { c.MemoryReturnAfter = -time.Second }, "BULKHEAD_MEMORY_RETURN_AFTER:"},
		{"max body", func(c *Config) { c.MaxRequestBodyBytes = 100 }, "BULKHEAD_MAX_REQUEST_BODY_BYTES:"},
		{"shutdown timeout", func(c *Config) { c.ShutdownTimeout = 0 }, "BULKHEAD_SHUTDOWN_TIMEOUT:"},
		{"shutdown grace", func(c *Config) { c.ShutdownGrace = -time.Second }, "BULKHEAD_SHUTDOWN_GRACE:"},
		{"log level", func(c *Config) { c.LogLevel = "loud" }, "BULKHEAD_LOG_LEVEL:"},
		{"log level empty", func(c *Config) { c.LogLevel = "" }, "BULKHEAD_LOG_LEVEL:"},
		{"log format", func(c *Config) { c.LogFormat = "xml" }, "BULKHEAD_LOG_FORMAT:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.mod(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			problems := strings.Split(err.Error(), "\n")
			if len(problems) != 1 || !strings.HasPrefix(problems[0], tc.want) {
				t.Errorf("problems %q, want one starting %q", problems, tc.want)
			}
		})
	}

	// Fallbacks naming each other are no loop: only the routed upstream's
	// own list is followed.
	c0 := Default()
	c0.Upstreams = []Upstream{
		{Name: "a", Kind: "openai", URL: "https://a.example.com/v1", Models: []string{"m"}, Fallbacks: []string{"b", "default"}},
		{Name: "b", Kind: "openai", URL: "https://b.example.com/v1", Models: []string{"n"}, Fallbacks: []string{"a"}},
	}
	if err := c0.Validate(); err != nil {
		t.Errorf("mutual fallbacks: %v", err)
	}
	c0.Upstreams[1].Kind = "anthropic"
	if err := c0.Validate(); err == nil || !strings.Contains(err.Error(), "upstreams[0].fallbacks:") || !strings.Contains(err.Error(), "upstreams[1].fallbacks:") {
		t.Errorf("fallbacks across APIs: %v", err)
	}

	// Two upstreams routing one model: the second names the first.
	c := Default()
	c.Upstreams = []Upstream{
		{Name: "a", Kind: "openai", URL: "https://a.example.com/v1", Models: []string{"m"}},
		{Name: "a", Kind: "openai", URL: "https://b.example.com/v1", Models: []string{"m"}},
	}
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "upstreams[1].name:") || !strings.Contains(err.Error(), `"m" is already routed to a`) {
		t.Errorf("duplicate upstream and model: %v", err)
	}
}
