package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/spool"
)

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
	if c.ControlListen != "" {
		checkAddr("BULKHEAD_CONTROL_LISTEN", c.ControlListen)
	}
	if c.ControlSessionTTL <= 0 {
		bad("BULKHEAD_CONTROL_SESSION_TTL", "must be positive, got %s", c.ControlSessionTTL)
	}
	checkURL("BULKHEAD_DATABASE_URL", c.DatabaseURL.Reveal(), "postgres", "postgresql")
	checkURL("BULKHEAD_ADMIN_DATABASE_URL", c.AdminDatabaseURL.Reveal(), "postgres", "postgresql")
	if c.DatabaseMaxConns < 1 {
		bad("BULKHEAD_DATABASE_MAX_CONNS", "must be at least 1, got %d", c.DatabaseMaxConns)
	}
	switch c.RedisMode {
	case RedisSingle, RedisCluster, RedisSentinel:
		if c.RedisURL != "" {
			if _, err := c.RedisOptions(); err != nil {
				errs = append(errs, err)
			}
		}
	default:
		bad("BULKHEAD_REDIS_MODE", "want single, cluster or sentinel, got %q", c.RedisMode)
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
	if c.BudgetWebhookURL != "" {
		if u, err := url.Parse(c.BudgetWebhookURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("BULKHEAD_BUDGET_WEBHOOK_URL", "want an http or https URL")
		}
		if len(c.BudgetWebhookSecret) < 16 {
			bad("BULKHEAD_BUDGET_WEBHOOK_SECRET", "must be at least 16 bytes when BULKHEAD_BUDGET_WEBHOOK_URL is set")
		}
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
	if c.ControlFailuresPerMinutePerAddress < 0 {
		bad("BULKHEAD_CONTROL_FAILURES_PER_MINUTE_PER_ADDRESS", "must not be negative, got %d", c.ControlFailuresPerMinutePerAddress)
	}
	if c.ControlFailuresPerMinutePerPrefix < 0 {
		bad("BULKHEAD_CONTROL_FAILURES_PER_MINUTE_PER_PREFIX", "must not be negative, got %d", c.ControlFailuresPerMinutePerPrefix)
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
	if c.UpstreamMaxAttempts < 1 || c.UpstreamMaxAttempts > 10 {
		bad("BULKHEAD_UPSTREAM_MAX_ATTEMPTS", "must be 1 to 10, got %d", c.UpstreamMaxAttempts)
	}
	if e := c.OTelExporterOTLPEndpoint; e != "" {
		if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("BULKHEAD_OTEL_EXPORTER_OTLP_ENDPOINT", "must be an http or https URL such as http://collector:4318")
		}
	}
	if c.AnthropicDefaultMaxTokens < 1 {
		bad("BULKHEAD_ANTHROPIC_DEFAULT_MAX_TOKENS", "must be at least 1, got %d", c.AnthropicDefaultMaxTokens)
	}
	if c.UpstreamRetryBackoff < 0 {
		bad("BULKHEAD_UPSTREAM_RETRY_BACKOFF", "must not be negative, got %s", c.UpstreamRetryBackoff)
	}
	if c.UpstreamBreakerFailures < 0 {
		bad("BULKHEAD_UPSTREAM_BREAKER_FAILURES", "must not be negative, got %d", c.UpstreamBreakerFailures)
	}
	positive("BULKHEAD_UPSTREAM_BREAKER_COOLDOWN", c.UpstreamBreakerCooldown)
	if c.UpstreamMaxConns < 1 {
		bad("BULKHEAD_UPSTREAM_MAX_CONNS", "must be at least 1, got %d", c.UpstreamMaxConns)
	}
	if c.SpoolMaxBytes < 1<<20 {
		bad("BULKHEAD_SPOOL_MAX_BYTES", "must be at least 1 MiB, got %d", c.SpoolMaxBytes)
	}
	// Exactly the policies' names: ParseSyncPolicy also takes "" and
	// any case, which this setting never did.
	if _, err := store.ParseRetention(c.Retention); err != nil {
		bad("BULKHEAD_RETENTION", "want a number of days like 30d, or empty to keep forever, got %q", c.Retention)
	}
	if c.SealKeyCacheTTL <= 0 {
		bad("BULKHEAD_SEAL_KEY_CACHE_TTL", "must be positive, got %s", c.SealKeyCacheTTL)
	}
	if c.SealKeyCacheSize < 1 {
		bad("BULKHEAD_SEAL_KEY_CACHE_SIZE", "must be at least 1, got %d", c.SealKeyCacheSize)
	}
	if c.RetentionInterval < 0 {
		bad("BULKHEAD_RETENTION_INTERVAL", "must not be negative, got %s", c.RetentionInterval)
	}
	if p, err := spool.ParseSyncPolicy(c.SpoolFsync); err != nil || p.String() != c.SpoolFsync {
		bad("BULKHEAD_SPOOL_FSYNC", "want interval, batch or never, got %q", c.SpoolFsync)
	}
	if c.CaptureMaxBytes < 0 {
		bad("BULKHEAD_CAPTURE_MAX_BYTES", "must not be negative, got %d", c.CaptureMaxBytes)
	}
	if c.ModelAccessDefault != ModelAccessAll && c.ModelAccessDefault != ModelAccessNone {
		bad("BULKHEAD_MODEL_ACCESS_DEFAULT", "want all or none, got %q", c.ModelAccessDefault)
	}
	positive("BULKHEAD_MODEL_CACHE_TTL", c.ModelCacheTTL)
	c.validateTargets(bad)
	names, models := map[string]bool{}, map[string]string{}
	for i, u := range c.Upstreams {
		at := func(field string) string { return fmt.Sprintf("upstreams[%d].%s", i, field) }
		if u.Name == "" || names[u.Name] {
			bad(at("name"), "must be set and unique, got %q", u.Name)
		}
		if u.Name == "default" && c.UpstreamURL != "" {
			bad(at("name"), "\"default\" is BULKHEAD_UPSTREAM_URL's name")
		}
		names[u.Name] = true
		if u.Kind != "openai" && u.Kind != "azure" && u.Kind != "anthropic" {
			bad(at("kind"), "want openai, azure or anthropic, got %q", u.Kind)
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
	anthropic := map[string]bool{} // name -> speaks Anthropic's API, not OpenAI's
	for _, u := range c.Upstreams {
		anthropic[u.Name] = u.Kind == "anthropic"
	}
	for i, u := range c.Upstreams {
		seen := map[string]bool{}
		for _, f := range u.Fallbacks {
			if names[f] && anthropic[f] != anthropic[u.Name] {
				bad(fmt.Sprintf("upstreams[%d].fallbacks", i), "%q speaks another API than %s (anthropic and OpenAI's do not mix)", f, u.Name)
			}
			if f == "default" && !names[f] && anthropic[u.Name] {
				bad(fmt.Sprintf("upstreams[%d].fallbacks", i), "\"default\" speaks OpenAI's API, %s Anthropic's", u.Name)
			}
			switch {
			case f == u.Name:
				bad(fmt.Sprintf("upstreams[%d].fallbacks", i), "%q names the upstream itself (a loop)", f)
			case seen[f]:
				bad(fmt.Sprintf("upstreams[%d].fallbacks", i), "%q is named twice (a loop)", f)
			case f == "default" && c.UpstreamURL == "" && !names[f]:
				bad(fmt.Sprintf("upstreams[%d].fallbacks", i), "\"default\" names BULKHEAD_UPSTREAM_URL, which is not set")
			case f != "default" && !names[f]:
				bad(fmt.Sprintf("upstreams[%d].fallbacks", i), "%q is not the name of an upstream", f)
			}
			seen[f] = true
		}
	}
	for dep, model := range c.AzureDeployments {
		if dep == "" || model == "" {
			bad("azure_deployments", "deployment %q: names a model, both non-empty", dep)
		}
	}
	if n, err := ParseSize(c.MemoryLimit); err != nil {
		bad("BULKHEAD_MEMORY_LIMIT", "want a size like 512MiB (units B, KiB, MiB, GiB, TiB), or empty for none, got %q", c.MemoryLimit)
	} else if c.MemoryLimit != "" && n < minMemoryLimit {
		bad("BULKHEAD_MEMORY_LIMIT", "must be at least 32MiB (a number without a unit is bytes), got %q", c.MemoryLimit)
	}
	if c.MemoryReturnAfter != 0 && c.MemoryReturnAfter < time.Second {
		bad("BULKHEAD_MEMORY_RETURN_AFTER", "must be 0 (off) or at least 1s, got %s", c.MemoryReturnAfter)
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
