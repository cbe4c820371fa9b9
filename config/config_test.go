package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.yaml.in/yaml/v3"

	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/gateway/memory"
	"github.com/bulkheadhq/bulkhead/ratelimit"
	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/spool"
)

func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDefaultsAreValid(t *testing.T) {
	c, err := Load("", envMap(nil))
	if err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if c.Listen != ":8080" || c.AdminListen != "127.0.0.1:9090" {
		t.Errorf("listen defaults = %q, %q", c.Listen, c.AdminListen)
	}
	if c.ShutdownTimeout != 30*time.Second {
		t.Errorf("ShutdownTimeout = %s", c.ShutdownTimeout)
	}
	for _, v := range Vars() {
		if v.Env == "" || !strings.HasPrefix(v.Env, "BULKHEAD_") || v.YAML == "" || v.Help == "" {
			t.Errorf("field with incomplete tags: %+v", v)
		}
	}
}

func TestPrecedence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bulkhead.yaml")
	file := "listen: \":7000\"\nadmin_listen: \"127.0.0.1:7001\"\nshutdown_timeout: 5s\nredis_url: redis://10.0.0.1:6379/1\n"
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path, envMap(map[string]string{
		"BULKHEAD_LISTEN":    ":7100", // env beats file
		"BULKHEAD_REDIS_URL": "",      // set but empty: single-instance mode
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != ":7100" {
		t.Errorf("Listen = %q, want the env value", c.Listen)
	}
	if c.AdminListen != "127.0.0.1:7001" {
		t.Errorf("AdminListen = %q, want the file value", c.AdminListen)
	}
	if c.ShutdownTimeout != 5*time.Second {
		t.Errorf("ShutdownTimeout = %s, want the file value", c.ShutdownTimeout)
	}
	if c.RedisURL != "" {
		t.Errorf("RedisURL = %q, want empty (env set to empty)", c.RedisURL.Reveal())
	}
	if c.LogLevel != "info" {
		t.Errorf("LogLevel = %q, want the default", c.LogLevel)
	}
}

func TestFileErrors(t *testing.T) {
	dir := t.TempDir()
	unknown := filepath.Join(dir, "unknown.yaml")
	os.WriteFile(unknown, []byte("listen: \":1\"\nlisten_typo: x\n"), 0o600)
	if _, err := Load(unknown, envMap(nil)); err == nil || !strings.Contains(err.Error(), "listen_typo") {
		t.Errorf("unknown key: err = %v, want it named", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml"), envMap(nil)); err == nil {
		t.Error("missing file: no error")
	}
	empty := filepath.Join(dir, "empty.yaml")
	os.WriteFile(empty, nil, 0o600)
	if _, err := Load(empty, envMap(nil)); err != nil {
		t.Errorf("empty file: %v", err)
	}
}

func TestEveryProblemReportedAtOnce(t *testing.T) {
	_, err := Load("", envMap(map[string]string{
		"BULKHEAD_LISTEN":                          "no-port",
		"BULKHEAD_DATABASE_URL":                    "mysql://x@y/z",
		"BULKHEAD_UPSTREAM_URL":                    "ftp://host",
		"BULKHEAD_SHUTDOWN_TIMEOUT":                "0s",
		"BULKHEAD_LOG_LEVEL":                       "loud",
		"BULKHEAD_MAX_REQUEST_BODY_BYTES":          "12",
		"BULKHEAD_TPM_DEFAULT_COMPLETION_ESTIMATE": "-1",
	}))
	if err == nil {
		t.Fatal("no error")
	}
	for _, env := range []string{"BULKHEAD_LISTEN", "BULKHEAD_DATABASE_URL", "BULKHEAD_UPSTREAM_URL",
		"BULKHEAD_SHUTDOWN_TIMEOUT", "BULKHEAD_LOG_LEVEL", "BULKHEAD_MAX_REQUEST_BODY_BYTES", "BULKHEAD_TPM_DEFAULT_COMPLETION_ESTIMATE"} {
		if !strings.Contains(err.Error(), env) {
			t.Errorf("error does not name %s:\n%v", env, err)
		}
	}

	_, err = Load("", envMap(map[string]string{"BULKHEAD_SHUTDOWN_TIMEOUT": "thirty", "BULKHEAD_DATABASE_MAX_CONNS": "ten"}))
	if err == nil || !strings.Contains(err.Error(), "BULKHEAD_SHUTDOWN_TIMEOUT") || !strings.Contains(err.Error(), "BULKHEAD_DATABASE_MAX_CONNS") {
		t.Errorf("parse errors = %v, want both variables named", err)
	}
}

func TestSecretsRedact(t *testing.T) {
	const pw = "hunter2-very-secret"
	c, err := Load("", envMap(map[string]string{
		"BULKHEAD_DATABASE_URL":     "postgres://app:" + pw + "@db.internal:5432/bulkhead?password=" + pw,
		"BULKHEAD_UPSTREAM_API_KEY": "sk-proj-" + pw,
	}))
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	logger := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&logged), zap.DebugLevel))
	logger.Info("config", zap.Any("config", c), zap.Stringer("key", c.UpstreamAPIKey))
	yml, _ := yaml.Marshal(c)
	js, _ := json.Marshal(c)
	outputs := map[string]string{
		"%v":   fmt.Sprintf("%v", c),
		"%+v":  fmt.Sprintf("%+v", c),
		"%#v":  fmt.Sprintf("%#v", c),
		"%s":   fmt.Sprintf("%s", c.UpstreamAPIKey),
		"%q":   fmt.Sprintf("%q", c.UpstreamAPIKey),
		"json": string(js),
		"yaml": string(yml),
		"zap":  logged.String(),
	}
	for name, out := range outputs {
		if strings.Contains(out, pw) {
			t.Errorf("%s leaks the secret: %s", name, out)
		}
	}
	if !strings.Contains(outputs["%+v"], "db.internal:5432") {
		t.Errorf("redacted DSN lost its host: %s", outputs["%+v"])
	}
	if c.UpstreamAPIKey.Reveal() != "sk-proj-"+pw {
		t.Error("Reveal does not return the value")
	}
}

func TestUpstreamsFromYAML(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "routes.yaml")
	os.WriteFile(path, []byte(`
upstreams:
  - name: azure-eu
    kind: azure
    url: https://example-eu.openai.azure.com
    api_key_env: AZURE_KEY
    api_version: "2024-10-21"
    models: [gpt-4o, "gpt-4.1*"]
    deployments: {gpt-4o: gpt4o-prod}
  - name: local
    kind: openai
    url: http://127.0.0.1:8000/v1
    models: [llama-3.1-8b]
`), 0o600)
	c, err := Load(path, envMap(map[string]string{"AZURE_KEY": "azure-secret-value"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Upstreams) != 2 || c.Upstreams[0].APIKey.Reveal() != "azure-secret-value" || c.Upstreams[0].Deployments["gpt-4o"] != "gpt4o-prod" {
		t.Errorf("upstreams = %+v", c.Upstreams)
	}
	if strings.Contains(fmt.Sprintf("%+v", c), "azure-secret-value") {
		t.Error("upstream key printed")
	}

	if _, err := Load(path, envMap(nil)); err == nil || !strings.Contains(err.Error(), "AZURE_KEY") {
		t.Errorf("missing credential variable: err = %v", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(`
upstreams:
  - {name: a, kind: azure, url: "ftp://x", models: [m]}
  - {name: a, kind: bedrock, url: "http://y", models: [m]}
`), 0o600)
	_, err = Load(bad, envMap(nil))
	for _, want := range []string{"upstreams[0].url", "upstreams[0].api_version", "upstreams[1].name", "upstreams[1].kind", `"m" is already routed`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %s", err, want)
		}
	}
}

// The failed-authentication budgets default to a minute's worth per
// address (60) and 600 per organization, 0 turns each off, and a negative one
// is refused by name.
func TestAuthFailureBudgets(t *testing.T) {
	c, err := Load("", envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.AuthFailuresPerMinutePerAddress != 60 || c.AuthFailuresPerMinutePerOrg != 600 {
		t.Errorf("defaults %d per address, %d per organization; want 60 and 600", c.AuthFailuresPerMinutePerAddress, c.AuthFailuresPerMinutePerOrg)
	}
	off, err := Load("", envMap(map[string]string{"BULKHEAD_AUTH_FAILURES_PER_MINUTE_PER_ADDRESS": "0", "BULKHEAD_AUTH_FAILURES_PER_MINUTE_PER_ORG": "0"}))
	if err != nil || off.AuthFailuresPerMinutePerAddress != 0 || off.AuthFailuresPerMinutePerOrg != 0 {
		t.Errorf("0 (off): %+v, %v", off, err)
	}
	_, err = Load("", envMap(map[string]string{"BULKHEAD_AUTH_FAILURES_PER_MINUTE_PER_ADDRESS": "-1", "BULKHEAD_AUTH_FAILURES_PER_MINUTE_PER_ORG": "-5"}))
	for _, env := range []string{"BULKHEAD_AUTH_FAILURES_PER_MINUTE_PER_ADDRESS", "BULKHEAD_AUTH_FAILURES_PER_MINUTE_PER_ORG"} {
		if err == nil || !strings.Contains(err.Error(), env) {
			t.Errorf("negative budget: err = %v, want %s named", err, env)
		}
	}
}

// Prepared statements are on unless turned off (behind a transaction
// pooler that drops them); a value that is not a boolean, such as the
// pooler's name, is refused by name rather than read as either.
func TestDatabasePreparedStatements(t *testing.T) {
	c, err := Load("", envMap(nil))
	if err != nil || !c.DatabasePreparedStatements {
		t.Errorf("default: %v, %v; want true", c.DatabasePreparedStatements, err)
	}
	c, err = Load("", envMap(map[string]string{"BULKHEAD_DATABASE_PREPARED_STATEMENTS": "false"}))
	if err != nil || c.DatabasePreparedStatements {
		t.Errorf("false: %v, %v", c.DatabasePreparedStatements, err)
	}
	_, err = Load("", envMap(map[string]string{"BULKHEAD_DATABASE_PREPARED_STATEMENTS": "pgbouncer"}))
	if err == nil || !strings.Contains(err.Error(), "BULKHEAD_DATABASE_PREPARED_STATEMENTS") {
		t.Errorf("pgbouncer: err = %v, want the variable named", err)
	}
}

// The defaults the README's table shows (Vars) are the ones Load applies:
// each parses, as an environment value, back to Default's field.
func TestVarsShowTheDefaults(t *testing.T) {
	def := reflect.ValueOf(Default())
	byEnv := map[string]reflect.Value{}
	for i := range def.NumField() {
		byEnv[def.Type().Field(i).Tag.Get("env")] = def.Field(i)
	}
	for _, v := range Vars() {
		want := byEnv[v.Env]
		got := reflect.New(want.Type()).Elem()
		if err := setField(got, v.Default); err != nil {
			t.Errorf("%s: default %q does not parse: %v", v.Env, v.Default, err)
			continue
		}
		if !reflect.DeepEqual(got.Interface(), want.Interface()) {
			t.Errorf("%s: the table says %q, Load applies %v", v.Env, v.Default, want.Interface())
		}
	}
	for d, want := range map[time.Duration]string{
		0: "0s", 100 * time.Millisecond: "100ms", 30 * time.Second: "30s", 90 * time.Second: "1m30s",
		2 * time.Minute: "2m", 10 * time.Minute: "10m", 90 * time.Minute: "1h30m", 2 * time.Hour: "2h",
	} {
		if got := formatField(reflect.ValueOf(d)); got != want {
			t.Errorf("%s is written %q, want %q", d, got, want)
		}
	}
}

// A setting that configures another package's option defaults to that
// package's own default, so that leaving it unset means the same in the
// configuration and in the package.
func TestDefaultsOfOwningPackages(t *testing.T) {
	c := Default()
	for _, d := range []struct {
		env       string
		got, want any
	}{
		{"BULKHEAD_REDIS_TIMEOUT", c.RedisTimeout, ratelimit.DefaultTimeout},
		{"BULKHEAD_REDIS_TIMEOUT", c.RedisTimeout, auth.DefaultRedisTimeout},
		{"BULKHEAD_AUTH_CACHE_TTL", c.AuthCacheTTL, auth.DefaultCacheTTL},
		{"BULKHEAD_AUTH_CACHE_SIZE", c.AuthCacheSize, auth.DefaultCacheSize},
		{"BULKHEAD_AUTH_NEGATIVE_CACHE_TTL", c.AuthNegativeCacheTTL, auth.DefaultNegativeTTL},
		{"BULKHEAD_AUTH_NEGATIVE_CACHE_SIZE", c.AuthNegativeCacheSize, auth.DefaultNegativeSize},
		{"BULKHEAD_AUTH_REDIS_TTL", c.AuthRedisTTL, auth.DefaultRedisTTL},
		{"BULKHEAD_SPOOL_MAX_BYTES", c.SpoolMaxBytes, store.DefaultSpoolMaxBytes},
		{"BULKHEAD_MEMORY_RETURN_AFTER", c.MemoryReturnAfter, memory.DefaultQuiet},
	} {
		if d.got != d.want {
			t.Errorf("%s defaults to %v, its package to %v", d.env, d.got, d.want)
		}
	}
	if p := c.SpoolSyncPolicy(); p != spool.SyncInterval {
		t.Errorf("BULKHEAD_SPOOL_FSYNC defaults to %s, want interval", p)
	}
	for _, p := range []spool.SyncPolicy{spool.SyncBatch, spool.SyncInterval, spool.SyncNever} {
		c, err := Load("", envMap(map[string]string{"BULKHEAD_SPOOL_FSYNC": p.String()}))
		if err != nil || c.SpoolSyncPolicy() != p {
			t.Errorf("BULKHEAD_SPOOL_FSYNC=%s: policy %s, %v", p, c.SpoolSyncPolicy(), err)
		}
	}
}

// BULKHEAD_MEMORY_LIMIT is written as GOMEMLIMIT is, so that a value can
// move between the two; empty means no setting (GOMEMLIMIT, or none).
func TestMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64 // -1: rejected by ParseSize
	}{
		{"", 0},
		{"536870912", 512 << 20},
		{"536870912B", 512 << 20},
		{"65536KiB", 64 << 20},
		{"512MiB", 512 << 20},
		{"2GiB", 2 << 30},
		{"1TiB", 1 << 40},
		{"8388607TiB", 8388607 << 40},
		{"8388608TiB", -1}, // past int64
		{"512MB", -1},      // GOMEMLIMIT has no decimal units
		{"512mib", -1},
		{"0.5GiB", -1},
		{"-1", -1},
		{" 512MiB", -1},
		{"MiB", -1},
		{"off", -1},
	} {
		got, err := ParseSize(tc.in)
		if tc.want < 0 {
			if err == nil {
				t.Errorf("ParseSize(%q) = %d, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v, want %d", tc.in, got, err, tc.want)
		}
	}

	c, err := Load("", envMap(map[string]string{"BULKHEAD_MEMORY_LIMIT": "768MiB"}))
	if err != nil || c.MemoryLimitBytes() != 768<<20 {
		t.Errorf("BULKHEAD_MEMORY_LIMIT=768MiB: %d bytes, %v", c.MemoryLimitBytes(), err)
	}
	if n := Default().MemoryLimitBytes(); n != 0 {
		t.Errorf("the default limit is %d bytes, want none (0)", n)
	}
}

// Tracing is on with Bulkhead's endpoint or the standard OTEL_* ones,
// off without, and off whatever they say with OTEL_SDK_DISABLED=true.
func TestTracingFromEnv(t *testing.T) {
	for name, tc := range map[string]struct {
		env  map[string]string
		want bool
	}{
		"nothing":              {map[string]string{}, false},
		"bulkhead endpoint":    {map[string]string{"BULKHEAD_OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, true},
		"standard endpoint":    {map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, true},
		"standard traces":      {map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, true},
		"exporter none":        {map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, false},
		"sdk disabled":         {map[string]string{"BULKHEAD_OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, false},
		"empty standard value": {map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, false},
	} {
		c, err := Load("", func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if c.Tracing() != tc.want {
			t.Errorf("%s: Tracing() = %v", name, c.Tracing())
		}
	}
}
