package deploy_test

// These tests read the deployment files as data: every YAML document under
// deploy/, the Dockerfile and the init SQL. They need no Docker, no cluster
// and no network. What they guard:
//
//   - every BULKHEAD_* variable the files set is one that config declares
//     (a misspelt variable is silently ignored at run time);
//   - the settings each Bulkhead container ends up with (image ENV, compose
//     environment, ConfigMap, Secret, env lists, the mounted routes file)
//     load and validate with config.Load, as the binary would load them;
//   - the Kubernetes objects are well formed and point at each other
//     (Secrets, ConfigMaps, keys, selectors, the HPA target);
//   - probes, non-root, read-only root and the shutdown budget.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/bulkheadhq/bulkhead/config"
)

const (
	namespace = "bulkhead"
	adminPort = 9090
	apiPort   = 8080
)

// ---- loading ----

type doc struct {
	file string // relative to deploy/
	obj  map[string]any
}

func (d doc) String() string {
	return fmt.Sprintf("%s: %s %s", d.file, str(d.obj["kind"]), str(get(d.obj, "metadata", "name")))
}

// yamlFiles lists every .yaml/.yml file under deploy/, relative to it.
func yamlFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ext := filepath.Ext(p); !d.IsDir() && (ext == ".yaml" || ext == ".yml") {
			files = append(files, filepath.ToSlash(p))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no YAML files under deploy/")
	}
	return files
}

// decodeAll parses every document of a multi-document YAML file.
func decodeAll(t *testing.T, file string) []doc {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var docs []doc
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for i := 0; ; i++ {
		var v any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", file, i, err)
		}
		if v == nil {
			continue // an empty document, e.g. after a trailing ---
		}
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%s: document %d is a %T, want a mapping", file, i, v)
		}
		docs = append(docs, doc{file: file, obj: m})
	}
	if len(docs) == 0 {
		t.Fatalf("%s: no documents", file)
	}
	return docs
}

func k8sDocs(t *testing.T) []doc {
	t.Helper()
	var docs []doc
	for _, f := range yamlFiles(t) {
		if strings.HasPrefix(f, "k8s/") {
			docs = append(docs, decodeAll(t, f)...)
		}
	}
	if len(docs) == 0 {
		t.Fatal("no manifests under deploy/k8s")
	}
	return docs
}

func composeFile(t *testing.T) map[string]any {
	t.Helper()
	docs := decodeAll(t, "compose.yaml")
	if len(docs) != 1 {
		t.Fatalf("compose.yaml: %d documents, want 1", len(docs))
	}
	return docs[0].obj
}

// ---- generic access to decoded YAML ----

func get(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func mapping(v any) map[string]any { m, _ := v.(map[string]any); return m }
func list(v any) []any             { l, _ := v.([]any); return l }

// str renders a scalar the way a container runtime would see it.
func str(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		return fmt.Sprint(v)
	}
}

func strs(v any) []string {
	var out []string
	for _, x := range list(v) {
		out = append(out, str(x))
	}
	return out
}

// ---- environment variable names ----

type envUse struct{ name, where string }

// envNames collects every environment variable name a decoded file sets:
// Kubernetes env lists (name:), compose environment maps and KEY=VALUE
// lists, ConfigMap data and Secret data/stringData keys, and, to catch any
// other form, any mapping key that looks like a BULKHEAD_ variable.
func envNames(where string, v any) []envUse {
	var out []envUse
	var walk func(at string, v any)
	walk = func(at string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				here := at + "." + k
				switch {
				case k == "env":
					for _, e := range list(x) {
						if n := str(get(e, "name")); n != "" {
							out = append(out, envUse{n, here})
						}
					}
				case k == "environment":
					if m := mapping(x); m != nil {
						for n := range m {
							out = append(out, envUse{n, here})
						}
					}
					for _, e := range strs(x) {
						n, _, _ := strings.Cut(e, "=")
						out = append(out, envUse{n, here})
					}
				case (k == "data" || k == "stringData") && (v["kind"] == "ConfigMap" || v["kind"] == "Secret"):
					for n := range mapping(x) {
						out = append(out, envUse{n, here})
					}
				case strings.HasPrefix(k, "BULKHEAD_"):
					out = append(out, envUse{k, here})
				}
				walk(here, x)
			}
		case []any:
			for i, x := range v {
				walk(fmt.Sprintf("%s[%d]", at, i), x)
			}
		}
	}
	walk(where, v)
	return out
}

// exempt names are set by the files on purpose without being config
// settings: the config file flag's variable and the tests' variables.
func exempt(name string) bool {
	return name == "BULKHEAD_CONFIG" || strings.HasPrefix(name, "BULKHEAD_TEST_")
}

func knownVars() map[string]bool {
	known := map[string]bool{}
	for _, v := range config.Vars() {
		known[v.Env] = true
	}
	return known
}

func TestEnvNamesAreConfigVars(t *testing.T) {
	known := knownVars()
	var uses []envUse
	for _, f := range yamlFiles(t) {
		for i, d := range decodeAll(t, f) {
			uses = append(uses, envNames(fmt.Sprintf("%s#%d", f, i), d.obj)...)
		}
	}
	df := parseDockerfile(t)
	for _, n := range df.env {
		uses = append(uses, envUse{n, "Dockerfile ENV"})
	}

	seen := map[string]bool{}
	for _, u := range uses {
		seen[u.name] = true
		if strings.HasPrefix(u.name, "BULKHEAD_") && !exempt(u.name) && !known[u.name] {
			t.Errorf("%s sets %s, which config does not declare (see `bulkhead config --markdown`)", u.where, u.name)
		}
	}
	// The collector must actually find the variables, or this test proves nothing.
	for _, n := range []string{
		"BULKHEAD_DATABASE_URL", "BULKHEAD_ADMIN_DATABASE_URL", "BULKHEAD_REDIS_URL",
		"BULKHEAD_UPSTREAM_URL", "BULKHEAD_UPSTREAM_API_KEY", "BULKHEAD_ADMIN_LISTEN",
		"BULKHEAD_SHUTDOWN_TIMEOUT", "BULKHEAD_LISTEN", "BULKHEAD_CONFIG",
	} {
		if !seen[n] {
			t.Errorf("no deploy file sets %s; the collector or the files are broken", n)
		}
	}
}

func TestEnvNamesCollector(t *testing.T) {
	var v any
	src := `
services:
  a:
    environment: {BULKHEAD_A: "1"}
  b:
    environment: ["BULKHEAD_B=2", "OTHER=3"]
spec:
  containers:
    - env: [{name: BULKHEAD_C, value: "4"}]
x: {BULKHEAD_D: 5}
`
	if err := yaml.Unmarshal([]byte(src), &v); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range envNames("t", v) {
		got = append(got, u.name)
	}
	slices.Sort(got)
	got = slices.Compact(got)
	want := []string{"BULKHEAD_A", "BULKHEAD_B", "BULKHEAD_C", "BULKHEAD_D", "OTHER"}
	if !slices.Equal(got, want) {
		t.Errorf("envNames = %v, want %v", got, want)
	}
}

// ---- Dockerfile ----

type dockerfile struct {
	stages []string            // FROM lines
	final  map[string][]string // instruction → arguments, of the last stage
	runs   []string            // every RUN, continuation lines joined
	env    []string            // every ENV name
	envVal map[string]string   // ENV of the last stage
}

func parseDockerfile(t *testing.T) dockerfile {
	t.Helper()
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	var cur strings.Builder
	for raw := range strings.SplitSeq(string(b), "\n") {
		line := strings.TrimSpace(raw)
		if strings.HasPrefix(line, "#") || line == "" && cur.Len() == 0 {
			continue // comments (and the syntax directive), blank lines
		}
		if s, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		if cur.Len() > 0 {
			lines = append(lines, cur.String())
		}
		cur.Reset()
	}
	df := dockerfile{envVal: map[string]string{}}
	for _, l := range lines {
		instr, args, _ := strings.Cut(l, " ")
		instr, args = strings.ToUpper(instr), strings.TrimSpace(args)
		switch instr {
		case "FROM":
			df.stages = append(df.stages, args)
			df.final = map[string][]string{}
			df.envVal = map[string]string{}
		case "RUN":
			df.runs = append(df.runs, args)
		case "ENV":
			for k, v := range parseEnvInstr(t, args) {
				df.env = append(df.env, k)
				df.envVal[k] = v
			}
		}
		if df.final != nil {
			df.final[instr] = append(df.final[instr], args)
		}
	}
	if len(df.stages) == 0 {
		t.Fatal("Dockerfile: no FROM")
	}
	return df
}

// parseEnvInstr reads `ENV K=V K2="v w"` (and the legacy `ENV K V`).
func parseEnvInstr(t *testing.T, args string) map[string]string {
	t.Helper()
	out := map[string]string{}
	if k, v, ok := strings.Cut(args, " "); ok && !strings.Contains(k, "=") {
		out[k] = strings.TrimSpace(v)
		return out
	}
	var words []string
	var w strings.Builder
	quote := rune(0)
	for _, r := range args {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote == 0 && (r == '"' || r == '\''):
			quote = r
		case quote == 0 && (r == ' ' || r == '\t'):
			if w.Len() > 0 {
				words = append(words, w.String())
				w.Reset()
			}
		default:
			w.WriteRune(r)
		}
	}
	if w.Len() > 0 {
		words = append(words, w.String())
	}
	for _, word := range words {
		k, v, ok := strings.Cut(word, "=")
		if !ok {
			t.Errorf("Dockerfile: ENV %q: want KEY=VALUE", args)
			continue
		}
		out[k] = v
	}
	return out
}

func TestDockerfile(t *testing.T) {
	df := parseDockerfile(t)
	if len(df.stages) < 2 {
		t.Errorf("Dockerfile has %d stages, want a multi-stage build", len(df.stages))
	}
	if !strings.Contains(df.stages[0], "golang:1.26") {
		t.Errorf("builder stage is %q, want golang:1.26", df.stages[0])
	}
	final := df.stages[len(df.stages)-1]
	if !strings.Contains(final, "distroless/static") && !strings.HasPrefix(final, "scratch") {
		t.Errorf("final stage is %q, want distroless static or scratch", final)
	}

	users := df.final["USER"]
	if len(users) == 0 {
		t.Error("final stage has no USER: it would run as root")
	} else {
		uid, _, _ := strings.Cut(users[len(users)-1], ":")
		if n, err := strconv.Atoi(uid); err != nil || n == 0 {
			t.Errorf("final USER %q: want a numeric non-root uid (Kubernetes runAsNonRoot needs numbers)", users[len(users)-1])
		}
	}

	var exposed []string
	for _, e := range df.final["EXPOSE"] {
		exposed = append(exposed, strings.Fields(e)...)
	}
	for _, p := range []int{apiPort, adminPort} {
		if !slices.Contains(exposed, strconv.Itoa(p)) {
			t.Errorf("EXPOSE %v lacks %d", exposed, p)
		}
	}

	execForm := func(instr string, want []string) {
		args := df.final[instr]
		if len(args) == 0 {
			t.Errorf("final stage has no %s", instr)
			return
		}
		var got []string
		if err := json.Unmarshal([]byte(args[len(args)-1]), &got); err != nil {
			t.Errorf("%s %s: want exec (JSON) form, so signals reach the process: %v", instr, args[len(args)-1], err)
			return
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s = %q, want %q", instr, got, want)
		}
	}
	execForm("ENTRYPOINT", []string{"/bulkhead"})
	execForm("CMD", []string{"serve"})

	// The go build line: static, trimmed, and naming packages that exist.
	var build string
	for _, r := range df.runs {
		if strings.Contains(r, "go build") {
			build = r
		}
	}
	if build == "" {
		t.Fatal("no RUN with go build")
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-ldflags='-s -w'", "--mount=type=cache,target=/go/pkg/mod"} {
		if !strings.Contains(build, want) {
			t.Errorf("go build RUN lacks %s: %s", want, build)
		}
	}
	var pkgs []string
	for _, f := range strings.Fields(build) {
		if strings.HasPrefix(f, "./") {
			pkgs = append(pkgs, f)
			if st, err := os.Stat(filepath.Join("..", f)); err != nil || !st.IsDir() {
				t.Errorf("go build names %s, which is not a directory of the repository", f)
			}
		}
	}
	for _, want := range []string{"./cmd/bulkhead", "./cmd/mockllm", "./deploy/healthcheck"} {
		if !slices.Contains(pkgs, want) {
			t.Errorf("go build does not build %s (builds %v)", want, pkgs)
		}
	}
	copies := strings.Join(df.final["COPY"], "\n")
	for _, bin := range []string{"/bulkhead", "/mockllm", "/healthcheck"} {
		if !strings.Contains(copies, "/out"+bin) {
			t.Errorf("final stage does not copy %s", bin)
		}
	}
}

// ---- effective configuration ----

// loadConfig runs config.Load over env, as the binary would at startup.
// configFile, if not empty, is the content of the file BULKHEAD_CONFIG names.
func loadConfig(t *testing.T, where string, env map[string]string, configFile string) config.Config {
	t.Helper()
	p := ""
	if configFile != "" {
		p = filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(p, []byte(configFile), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := config.Load(p, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Errorf("%s: the configuration does not load:\n%v", where, err)
	}
	return cfg
}

// ---- compose ----

func TestCompose(t *testing.T) {
	c := composeFile(t)
	services := mapping(c["services"])
	for _, name := range []string{"postgres", "redis", "mockllm", "migrate", "demo", "gateway"} {
		if services[name] == nil {
			t.Errorf("compose.yaml: no service %q", name)
		}
	}
	image := parseDockerfile(t).envVal
	for name, sv := range services {
		s := mapping(sv)
		if str(s["image"]) == "" {
			t.Errorf("service %s: no image", name)
		}
		if b := mapping(s["build"]); b != nil {
			ctx := filepath.Join(".", str(b["context"]))
			if _, err := os.Stat(filepath.Join(ctx, str(b["dockerfile"]))); err != nil {
				t.Errorf("service %s: build: %v", name, err)
			}
		}
		for _, v := range strs(s["volumes"]) {
			if src, _, _ := strings.Cut(v, ":"); strings.HasPrefix(src, ".") {
				if _, err := os.Stat(src); err != nil {
					t.Errorf("service %s: volume %s: %v", name, v, err)
				}
			}
		}
		for dep := range dependsOn(s) {
			if services[dep] == nil {
				t.Errorf("service %s depends on unknown service %s", name, dep)
			}
		}
		// The Bulkhead subcommands (the built image, not mockllm): their
		// settings must load.
		if s["build"] != nil && s["entrypoint"] == nil {
			env := map[string]string{}
			for k, v := range image {
				env[k] = v
			}
			for k, v := range mapping(s["environment"]) {
				env[k] = str(v)
			}
			loadConfig(t, "compose service "+name, env, "")
		}
	}

	gw := mapping(services["gateway"])
	deps := dependsOn(gw)
	for dep, cond := range map[string]string{
		"migrate": "service_completed_successfully",
		"redis":   "service_healthy",
		"mockllm": "service_healthy",
	} {
		if deps[dep] != cond {
			t.Errorf("gateway depends on %s with %q, want %q", dep, deps[dep], cond)
		}
	}
	if got := dependsOn(mapping(services["migrate"]))["postgres"]; got != "service_healthy" {
		t.Errorf("migrate depends on postgres with %q, want service_healthy", got)
	}
	if got := strs(get(services, "migrate", "command")); !slices.Equal(got, []string{"migrate"}) {
		t.Errorf("migrate command = %q", got)
	}
	if got := strs(get(services, "demo", "command")); !slices.Equal(got, []string{"demo"}) {
		t.Errorf("demo command = %q", got)
	}
	if got := strs(get(services, "mockllm", "entrypoint")); len(got) == 0 || got[0] != "/mockllm" || !slices.Contains(got, "0.0.0.0:8081") {
		t.Errorf("mockllm entrypoint = %q, want /mockllm -listen 0.0.0.0:8081", got)
	}
	for _, name := range []string{"postgres", "redis", "mockllm", "gateway"} {
		if get(services, name, "healthcheck", "test") == nil {
			t.Errorf("service %s has no healthcheck", name)
		}
	}
	if hc := strings.Join(strs(get(gw, "healthcheck", "test")), " "); !strings.Contains(hc, fmt.Sprintf(":%d/readyz", adminPort)) {
		t.Errorf("gateway healthcheck %q does not ask /readyz on the admin port", hc)
	}
	ports := strs(gw["ports"])
	if !slices.Contains(ports, fmt.Sprintf("%d:%d", apiPort, apiPort)) {
		t.Errorf("gateway ports %q do not publish %d", ports, apiPort)
	}
	if !slices.Contains(ports, fmt.Sprintf("127.0.0.1:%d:%d", adminPort, adminPort)) {
		t.Errorf("gateway ports %q do not publish the admin port on 127.0.0.1 only", ports)
	}
	if grace, err := time.ParseDuration(str(gw["stop_grace_period"])); err != nil {
		t.Errorf("gateway stop_grace_period: %v", err)
	} else if cfg := loadConfig(t, "gateway", envOf(gw), ""); grace <= cfg.ShutdownTimeout+cfg.ShutdownGrace {
		t.Errorf("gateway stop_grace_period %s does not exceed BULKHEAD_SHUTDOWN_TIMEOUT+GRACE %s", grace, cfg.ShutdownTimeout+cfg.ShutdownGrace)
	}
}

func envOf(service map[string]any) map[string]string {
	env := map[string]string{}
	for k, v := range mapping(service["environment"]) {
		env[k] = str(v)
	}
	return env
}

// dependsOn returns service → condition for both compose forms.
func dependsOn(s map[string]any) map[string]string {
	out := map[string]string{}
	for _, d := range strs(s["depends_on"]) {
		out[d] = "service_started"
	}
	for d, v := range mapping(s["depends_on"]) {
		out[d] = str(get(v, "condition"))
	}
	return out
}

// The compose file documents, for integration tests against it, every
// BULKHEAD_TEST_* variable that the repository's tests read.
func TestComposeExportsTestEnv(t *testing.T) {
	b, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, m := range regexp.MustCompile(`export (BULKHEAD_TEST_[A-Z0-9_]+)=`).FindAllStringSubmatch(string(b), -1) {
		exported[m[1]] = true
	}
	read := map[string]string{}
	re := regexp.MustCompile(`"(BULKHEAD_TEST_[A-Z0-9_]+)"`)
	err = filepath.WalkDir("..", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "deploy" || d.Name() == "bin") {
			return filepath.SkipDir
		}
		if d.IsDir() || filepath.Ext(p) != ".go" {
			return nil
		}
		src, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range re.FindAllStringSubmatch(string(src), -1) {
			read[m[1]] = p
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(read) == 0 {
		t.Fatal("found no BULKHEAD_TEST_* variable in the repository's Go files")
	}
	for n, p := range read {
		if !exported[n] {
			t.Errorf("%s reads %s, but compose.yaml does not export it in its header", p, n)
		}
	}
}

// ---- init SQL ----

func TestInitSQL(t *testing.T) {
	b, err := os.ReadFile("initdb/10-bulkhead-roles.sql")
	if err != nil {
		t.Fatal(err)
	}
	sql := string(b)
	for _, re := range []string{
		`CREATE ROLE bulkhead_owner LOGIN [^;]*\bBYPASSRLS\b`,
		`CREATE ROLE bulkhead_app LOGIN [^;]*\bNOSUPERUSER\b[^;]*\bNOBYPASSRLS\b`,
		`CREATE DATABASE bulkhead OWNER bulkhead_owner;`,
		`CREATE DATABASE bulkhead_test OWNER bulkhead_owner;`,
		`GRANT CONNECT, TEMPORARY ON DATABASE bulkhead TO bulkhead_app;`,
		`GRANT USAGE ON SCHEMA public TO bulkhead_app;`,
	} {
		if !regexp.MustCompile(re).MatchString(sql) {
			t.Errorf("initdb SQL does not match %s", re)
		}
	}
	if regexp.MustCompile(`(?i)bulkhead_app[^;]*\b(SUPERUSER|BYPASSRLS)\b`).FindString(strings.ReplaceAll(strings.ReplaceAll(sql, "NOSUPERUSER", ""), "NOBYPASSRLS", "")) != "" {
		t.Error("initdb SQL gives bulkhead_app SUPERUSER or BYPASSRLS")
	}
}

// ---- Kubernetes ----

type cluster struct {
	docs    []doc
	objects map[string]doc // "Kind/name"
}

func newCluster(t *testing.T) cluster {
	t.Helper()
	c := cluster{docs: k8sDocs(t), objects: map[string]doc{}}
	for _, d := range c.docs {
		key := str(d.obj["kind"]) + "/" + str(get(d.obj, "metadata", "name"))
		if _, dup := c.objects[key]; dup {
			t.Errorf("%s: %s defined twice", d.file, key)
		}
		c.objects[key] = d
	}
	return c
}

func (c cluster) must(t *testing.T, kind, name string) map[string]any {
	t.Helper()
	d, ok := c.objects[kind+"/"+name]
	if !ok {
		t.Fatalf("no %s %s under deploy/k8s", kind, name)
	}
	return d.obj
}

// data returns a ConfigMap's data or a Secret's stringData and data keys.
func (c cluster) data(kind, name string) (map[string]string, bool) {
	d, ok := c.objects[kind+"/"+name]
	if !ok {
		return nil, false
	}
	out := map[string]string{}
	for _, field := range []string{"data", "stringData"} {
		for k, v := range mapping(d.obj[field]) {
			out[k] = str(v)
		}
	}
	return out, true
}

func TestManifestsWellFormed(t *testing.T) {
	c := newCluster(t)
	for _, d := range c.docs {
		if str(d.obj["apiVersion"]) == "" || str(d.obj["kind"]) == "" {
			t.Errorf("%s: a document without apiVersion or kind", d.file)
			continue
		}
		if str(get(d.obj, "metadata", "name")) == "" {
			t.Errorf("%s: no metadata.name", d)
		}
		ns := str(get(d.obj, "metadata", "namespace"))
		if d.obj["kind"] == "Namespace" {
			if ns != "" {
				t.Errorf("%s: a Namespace has no namespace", d)
			}
		} else if ns != namespace {
			t.Errorf("%s: namespace %q, want %q", d, ns, namespace)
		}
	}
	for _, want := range []string{
		"Namespace/bulkhead", "ConfigMap/bulkhead", "Secret/bulkhead-runtime", "Secret/bulkhead-admin",
		"Job/bulkhead-migrate", "Deployment/bulkhead", "Service/bulkhead",
		"HorizontalPodAutoscaler/bulkhead", "PodDisruptionBudget/bulkhead", "Deployment/example-app",
	} {
		if _, ok := c.objects[want]; !ok {
			t.Errorf("deploy/k8s has no %s", want)
		}
	}
	for _, f := range []string{"namespace", "configmap", "secret.example", "migrate-job", "deployment", "service", "hpa", "pdb", "sidecar-example"} {
		if _, err := os.Stat("k8s/" + f + ".yaml"); err != nil {
			t.Error(err)
		}
	}
}

// container is a container of a workload with its pod.
type container struct {
	where string
	pod   map[string]any
	c     map[string]any
	init  bool
}

func (c cluster) containers() []container {
	var out []container
	for _, d := range c.docs {
		pod := mapping(get(d.obj, "spec", "template", "spec"))
		if pod == nil {
			continue
		}
		for _, field := range []string{"initContainers", "containers"} {
			for _, x := range list(pod[field]) {
				out = append(out, container{
					where: fmt.Sprintf("%s container %s", d, str(get(x, "name"))),
					pod:   pod, c: mapping(x), init: field == "initContainers",
				})
			}
		}
	}
	return out
}

func (ct container) bulkhead() bool {
	return strings.Contains(str(ct.c["image"]), "/bulkhead:") || strings.Contains(str(ct.c["image"]), "/bulkhead@")
}

func (ct container) serves() bool {
	args := strs(ct.c["args"])
	return ct.bulkhead() && len(args) > 0 && args[0] == "serve"
}

// env resolves the container's environment as the kubelet would: the
// image's ENV, then envFrom, then env. Unresolvable references are errors.
func (c cluster) env(t *testing.T, ct container, image map[string]string) map[string]string {
	t.Helper()
	env := map[string]string{}
	if ct.bulkhead() {
		for k, v := range image {
			env[k] = v
		}
	}
	for _, ef := range list(ct.c["envFrom"]) {
		for kind, field := range map[string]string{"ConfigMap": "configMapRef", "Secret": "secretRef"} {
			if ref := get(ef, field); ref != nil {
				data, ok := c.data(kind, str(get(ref, "name")))
				if !ok {
					t.Errorf("%s: envFrom %s %q is not defined under deploy/k8s", ct.where, kind, str(get(ref, "name")))
				}
				for k, v := range data {
					if isEnvName(k) {
						env[k] = v
					}
				}
			}
		}
	}
	for _, e := range list(ct.c["env"]) {
		name := str(get(e, "name"))
		if vf := get(e, "valueFrom"); vf != nil {
			for kind, field := range map[string]string{"ConfigMap": "configMapKeyRef", "Secret": "secretKeyRef"} {
				if ref := get(vf, field); ref != nil {
					data, ok := c.data(kind, str(get(ref, "name")))
					v, has := data[str(get(ref, "key"))]
					if !ok || !has {
						t.Errorf("%s: env %s refers to %s %s key %s, which is not defined under deploy/k8s",
							ct.where, name, kind, str(get(ref, "name")), str(get(ref, "key")))
					}
					env[name] = v
				}
			}
			continue
		}
		env[name] = str(get(e, "value"))
	}
	return env
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func isEnvName(s string) bool { return envNameRE.MatchString(s) }

// mountedFile returns the content of the file at p inside the container,
// if a ConfigMap volume provides it.
func (c cluster) mountedFile(t *testing.T, ct container, p string) (string, bool) {
	t.Helper()
	for _, m := range list(ct.c["volumeMounts"]) {
		dir := str(get(m, "mountPath"))
		rel, ok := strings.CutPrefix(p, dir+"/")
		if !ok {
			continue
		}
		for _, v := range list(ct.pod["volumes"]) {
			if str(get(v, "name")) != str(get(m, "name")) || get(v, "configMap") == nil {
				continue
			}
			data, ok := c.data("ConfigMap", str(get(v, "configMap", "name")))
			if !ok {
				t.Errorf("%s: volume %s: ConfigMap %s is not defined", ct.where, str(get(v, "name")), str(get(v, "configMap", "name")))
				return "", false
			}
			key := rel
			for _, it := range list(get(v, "configMap", "items")) {
				if str(get(it, "path")) == rel {
					key = str(get(it, "key"))
				}
			}
			s, ok := data[key]
			return s, ok
		}
	}
	return "", false
}

// portNumber resolves a probe port (number or container port name).
func portNumber(ct container, port any) int {
	if n, err := strconv.Atoi(str(port)); err == nil {
		return n
	}
	for _, p := range list(ct.c["ports"]) {
		if str(get(p, "name")) == str(port) {
			n, _ := strconv.Atoi(str(get(p, "containerPort")))
			return n
		}
	}
	return 0
}

func TestBulkheadContainers(t *testing.T) {
	c := newCluster(t)
	image := parseDockerfile(t).envVal
	n := 0
	for _, ct := range c.containers() {
		// Every container of these manifests runs as non-root on a read-only root.
		sc, psc := mapping(ct.c["securityContext"]), mapping(ct.pod["securityContext"])
		if sc["runAsNonRoot"] != true && psc["runAsNonRoot"] != true {
			t.Errorf("%s: runAsNonRoot is not true", ct.where)
		}
		for _, s := range []map[string]any{sc, psc} {
			if uid, ok := s["runAsUser"]; ok && str(uid) == "0" {
				t.Errorf("%s: runAsUser 0", ct.where)
			}
		}
		if sc["readOnlyRootFilesystem"] != true {
			t.Errorf("%s: readOnlyRootFilesystem is not true", ct.where)
		}
		if sc["allowPrivilegeEscalation"] != false {
			t.Errorf("%s: allowPrivilegeEscalation is not false", ct.where)
		}
		if !slices.Contains(strs(get(sc, "capabilities", "drop")), "ALL") {
			t.Errorf("%s: capabilities do not drop ALL", ct.where)
		}
		if get(ct.c, "resources", "requests") == nil {
			t.Errorf("%s: no resource requests", ct.where)
		}

		env := c.env(t, ct, image)
		if !ct.bulkhead() {
			continue
		}
		n++
		if ct.init && str(ct.c["restartPolicy"]) != "Always" {
			t.Errorf("%s: a Bulkhead init container must be a native sidecar (restartPolicy: Always)", ct.where)
		}
		// The settings it ends up with load as the binary would load them.
		file := ""
		if p, ok := env["BULKHEAD_CONFIG"]; ok {
			if file, ok = c.mountedFile(t, ct, p); !ok {
				t.Errorf("%s: BULKHEAD_CONFIG=%s, but no ConfigMap volume provides that file", ct.where, p)
			}
		}
		cfg := loadConfig(t, ct.where, env, file)

		if !ct.serves() {
			continue
		}
		if _, port, _ := strings.Cut(cfg.AdminListen, ":"); port != strconv.Itoa(adminPort) || strings.HasPrefix(cfg.AdminListen, "127.") {
			t.Errorf("%s: admin listener %s is not reachable by the kubelet on :%d", ct.where, cfg.AdminListen, adminPort)
		}
		for probe, want := range map[string]string{
			"readinessProbe": "/readyz",
			"livenessProbe":  "/healthz",
		} {
			hg := get(ct.c, probe, "httpGet")
			if hg == nil {
				t.Errorf("%s: no %s.httpGet", ct.where, probe)
				continue
			}
			if got := str(get(hg, "path")); got != want {
				t.Errorf("%s: %s path %s, want %s", ct.where, probe, got, want)
			}
			if got := portNumber(ct, get(hg, "port")); got != adminPort {
				t.Errorf("%s: %s port resolves to %d, want %d", ct.where, probe, got, adminPort)
			}
		}
		if hg := get(ct.c, "startupProbe", "httpGet"); hg != nil && str(get(hg, "path")) != "/healthz" {
			t.Errorf("%s: startupProbe should ask /healthz, not %s", ct.where, str(get(hg, "path")))
		}

		// The pod's grace period covers the preStop sleep and the drain.
		grace, _ := strconv.Atoi(str(ct.pod["terminationGracePeriodSeconds"]))
		sleep, _ := strconv.Atoi(str(get(ct.c, "lifecycle", "preStop", "sleep", "seconds")))
		need := time.Duration(sleep)*time.Second + cfg.ShutdownGrace + cfg.ShutdownTimeout
		if time.Duration(grace)*time.Second <= need {
			t.Errorf("%s: terminationGracePeriodSeconds %d must exceed preStop %ds + BULKHEAD_SHUTDOWN_GRACE %s + BULKHEAD_SHUTDOWN_TIMEOUT %s",
				ct.where, grace, sleep, cfg.ShutdownGrace, cfg.ShutdownTimeout)
		}
	}
	if n < 3 {
		t.Errorf("found %d Bulkhead containers, want the gateway, the migrations Job and the sidecar", n)
	}
}

func TestCentralDeployment(t *testing.T) {
	c := newCluster(t)
	dep := c.must(t, "Deployment", "bulkhead")
	pod := mapping(get(dep, "spec", "template", "spec"))
	if str(get(dep, "spec", "replicas")) != "3" {
		t.Errorf("Deployment replicas = %v, want 3", get(dep, "spec", "replicas"))
	}
	if psc := mapping(pod["securityContext"]); psc["runAsNonRoot"] != true || str(psc["runAsUser"]) == "0" || psc["runAsUser"] == nil {
		t.Errorf("Deployment pod securityContext %v: want runAsNonRoot and a non-zero runAsUser", psc)
	}
	if len(list(pod["topologySpreadConstraints"])) == 0 {
		t.Error("Deployment has no topologySpreadConstraints")
	}
	gw := mapping(list(pod["containers"])[0])
	if sleep := get(gw, "lifecycle", "preStop", "sleep", "seconds"); sleep == nil {
		t.Error("gateway container has no preStop sleep")
	}
	// The spool directory is an emptyDir at /var/spool/bulkhead.
	spool := ""
	for _, m := range list(gw["volumeMounts"]) {
		if str(get(m, "mountPath")) == "/var/spool/bulkhead" {
			spool = str(get(m, "name"))
		}
	}
	ok := false
	for _, v := range list(pod["volumes"]) {
		ok = ok || str(get(v, "name")) == spool && get(v, "emptyDir") != nil
	}
	if spool == "" || !ok {
		t.Error("gateway has no emptyDir volume mounted at /var/spool/bulkhead")
	}

	labels := mapping(get(dep, "spec", "template", "metadata", "labels"))
	selects := func(sel map[string]any, labels map[string]any) bool {
		if len(sel) == 0 {
			return false
		}
		for k, v := range sel {
			if labels[k] != v {
				return false
			}
		}
		return true
	}
	if !selects(mapping(get(dep, "spec", "selector", "matchLabels")), labels) {
		t.Error("Deployment selector does not match its pod labels")
	}

	svc := c.must(t, "Service", "bulkhead")
	if !selects(mapping(get(svc, "spec", "selector")), labels) {
		t.Error("Service selector does not match the gateway pods")
	}
	app := c.must(t, "Deployment", "example-app")
	if selects(mapping(get(svc, "spec", "selector")), mapping(get(app, "spec", "template", "metadata", "labels"))) {
		t.Error("Service selector also matches the sidecar example's pods")
	}
	ports := map[int]string{}
	for _, p := range list(get(svc, "spec", "ports")) {
		n, _ := strconv.Atoi(str(get(p, "port")))
		ports[n] = str(get(p, "name"))
		if got := portNumber(container{c: gw}, get(p, "targetPort")); got != n {
			t.Errorf("Service port %d targets container port %d", n, got)
		}
	}
	if ports[apiPort] == "" || ports[adminPort] == "" || ports[apiPort] == ports[adminPort] {
		t.Errorf("Service ports %v: want %d and %d under distinct names", ports, apiPort, adminPort)
	}

	hpa := c.must(t, "HorizontalPodAutoscaler", "bulkhead")
	if str(hpa["apiVersion"]) != "autoscaling/v2" {
		t.Errorf("HPA apiVersion %v, want autoscaling/v2", hpa["apiVersion"])
	}
	if str(get(hpa, "spec", "scaleTargetRef", "kind")) != "Deployment" || str(get(hpa, "spec", "scaleTargetRef", "name")) != "bulkhead" {
		t.Error("HPA does not target Deployment bulkhead")
	}
	cpu := false
	for _, m := range list(get(hpa, "spec", "metrics")) {
		cpu = cpu || str(get(m, "resource", "name")) == "cpu"
	}
	if !cpu {
		t.Error("HPA does not scale on CPU")
	}
	if lo, _ := strconv.Atoi(str(get(hpa, "spec", "minReplicas"))); lo < 2 {
		t.Errorf("HPA minReplicas %d: want at least 2 for availability", lo)
	}

	pdb := c.must(t, "PodDisruptionBudget", "bulkhead")
	if !selects(mapping(get(pdb, "spec", "selector", "matchLabels")), labels) {
		t.Error("PodDisruptionBudget selector does not match the gateway pods")
	}
	if get(pdb, "spec", "maxUnavailable") == nil && get(pdb, "spec", "minAvailable") == nil {
		t.Error("PodDisruptionBudget sets neither maxUnavailable nor minAvailable")
	}

	job := c.must(t, "Job", "bulkhead-migrate")
	jc := mapping(list(get(job, "spec", "template", "spec", "containers"))[0])
	if got := strs(jc["args"]); !slices.Equal(got, []string{"migrate"}) {
		t.Errorf("migrate Job args %q, want [migrate]", got)
	}
	env := c.env(t, container{where: "migrate Job", c: jc, pod: mapping(get(job, "spec", "template", "spec"))}, nil)
	if env["BULKHEAD_ADMIN_DATABASE_URL"] == "" {
		t.Error("migrate Job does not get BULKHEAD_ADMIN_DATABASE_URL")
	}
	gwEnv := c.env(t, container{where: "gateway", c: gw, pod: pod}, nil)
	if _, ok := gwEnv["BULKHEAD_ADMIN_DATABASE_URL"]; ok {
		t.Error("the gateway gets the owner DSN; only the migrations Job should")
	}
}

func TestSidecarExample(t *testing.T) {
	c := newCluster(t)
	c.must(t, "Deployment", "example-app")
	var side, main container
	for _, ct := range c.containers() {
		switch {
		case !strings.Contains(ct.where, "Deployment example-app "):
		case ct.init && ct.bulkhead():
			side = ct
		case !ct.init:
			main = ct
		}
	}
	if side.c == nil || main.c == nil {
		t.Fatal("sidecar example: want a Bulkhead native sidecar and an app container")
	}
	env := c.env(t, side, parseDockerfile(t).envVal)
	if env["BULKHEAD_LISTEN"] != "127.0.0.1:8080" {
		t.Errorf("sidecar BULKHEAD_LISTEN = %q, want 127.0.0.1:8080", env["BULKHEAD_LISTEN"])
	}
	if got := c.env(t, main, nil)["OPENAI_BASE_URL"]; got != "http://localhost:8080/v1" {
		t.Errorf("app OPENAI_BASE_URL = %q, want http://localhost:8080/v1", got)
	}
}

// ---- README ----

func TestREADMEMentionsFiles(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, want := range []string{"docker build -f deploy/Dockerfile", "compose.yaml", "migrate-job.yaml", "secret.example.yaml", "sidecar-example.yaml", "/readyz", "/healthz"} {
		if !strings.Contains(readme, want) {
			t.Errorf("deploy/README.md does not mention %s", want)
		}
	}
	for _, f := range yamlFiles(t) {
		if !strings.Contains(readme, path.Base(f)) && !strings.HasPrefix(f, "initdb/") {
			t.Errorf("deploy/README.md does not mention %s", f)
		}
	}
}
