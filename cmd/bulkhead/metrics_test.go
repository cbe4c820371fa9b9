package main

import (
	"bufio"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulkheadhq/bulkhead/cmd/mockllm/mock"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/*.golden from this run")

// An operator's dashboards and alerts depend on the names, help texts,
// types and labels of /metrics: `bulkhead serve`, after one answered
// request, exposes exactly the bulkhead_* series of
// testdata/metrics.golden (values and volatile label values left out), and
// still the Go runtime's and the process's. A metric that disappears or
// changes shape fails here; a new one must be added to the golden file on
// purpose (go test -run TestMetricsSurface -update).
func TestMetricsSurface(t *testing.T) {
	storetest.Admin(t) // migrated, or skip/fail loudly
	_, key := cliTenant(t, "metrics")
	upstream := mockUpstream(t, mock.Options{})
	admin := freeAddr(t)
	listen := freeAddr(t)
	startGateway(t, map[string]string{
		"BULKHEAD_LISTEN":             listen,
		"BULKHEAD_ADMIN_LISTEN":       admin,
		"BULKHEAD_DATABASE_URL":       storetest.AppDSN(),
		"BULKHEAD_ADMIN_DATABASE_URL": storetest.OwnerDSN(),
		"BULKHEAD_REDIS_URL":          "",
		"BULKHEAD_UPSTREAM_URL":       upstream,
		"BULKHEAD_SPOOL_DIR":          t.TempDir(),
		"BULKHEAD_LOG_LEVEL":          "warn",
	})
	req, _ := http.NewRequest("POST", "http://"+listen+"/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body) //nolint:errcheck // only the metrics matter
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("the request got %d", resp.StatusCode)
	}

	resp, err = http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, others := metricsSurface(t, resp.Body)
	for _, want := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if want == "process_cpu_seconds_total" && runtime.GOOS != "linux" {
			continue
		}
		if !slices.Contains(others, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	golden := filepath.Join("testdata", "metrics.golden")
	if *updateGolden {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		gotLines, wantLines := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for _, l := range wantLines {
			if !slices.Contains(gotLines, l) {
				t.Errorf("missing from /metrics: %s", l)
			}
		}
		for _, l := range gotLines {
			if !slices.Contains(wantLines, l) {
				t.Errorf("new in /metrics: %s", l)
			}
		}
	}
}

var sampleLabel = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// stableLabels are the labels whose values are a fixed list an operator
// selects on; other label values (bucket bounds, models, endpoints) are
// reduced to the label's name.
var stableLabels = map[string]bool{"scope": true, "dependency": true, "kind": true}

// metricsSurface reduces a text exposition to the shape of its bulkhead_*
// families: HELP and TYPE lines and one line per distinct series shape,
// sorted. others lists the names of the other families.
func metricsSurface(t *testing.T, r io.Reader) (surface string, others []string) {
	t.Helper()
	lines := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
		case strings.HasPrefix(line, "# HELP ") || strings.HasPrefix(line, "# TYPE "):
			name := strings.Fields(line)[2]
			if !strings.HasPrefix(name, "bulkhead_") {
				if strings.HasPrefix(line, "# TYPE ") {
					others = append(others, name)
				}
				continue
			}
			lines[line] = true
		case strings.HasPrefix(line, "#"):
		default:
			name, rest, _ := strings.Cut(line, "{")
			if !strings.HasPrefix(name, "bulkhead_") {
				continue
			}
			if rest == "" { // no labels: "name value"
				lines[strings.Fields(name)[0]] = true
				continue
			}
			var labels []string
			for _, m := range sampleLabel.FindAllStringSubmatch(rest, -1) {
				if stableLabels[m[1]] {
					labels = append(labels, m[1]+"="+m[2])
				} else {
					labels = append(labels, m[1])
				}
			}
			lines[name+"{"+strings.Join(labels, ",")+"}"] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	// HELP and TYPE before the series of their family.
	sorted := make([]string, 0, len(lines))
	for l := range lines {
		sorted = append(sorted, l)
	}
	key := func(l string) string {
		if f := strings.Fields(l); strings.HasPrefix(l, "# ") {
			return f[2] + " 0" + f[1]
		}
		name, labels, _ := strings.Cut(l, "{")
		return name + " 1" + labels
	}
	slices.SortFunc(sorted, func(a, b string) int { return strings.Compare(key(a), key(b)) })
	return strings.Join(sorted, "\n") + "\n", others
}

// BULKHEAD_MEMORY_LIMIT reaches the Go runtime: serve sets it as the soft
// memory limit, which the runtime's own series reports.
func TestMemoryLimitApplied(t *testing.T) {
	storetest.Admin(t) // migrated, or skip/fail loudly
	admin := freeAddr(t)
	startGateway(t, map[string]string{
		"BULKHEAD_LISTEN":             freeAddr(t),
		"BULKHEAD_ADMIN_LISTEN":       admin,
		"BULKHEAD_DATABASE_URL":       storetest.AppDSN(),
		"BULKHEAD_ADMIN_DATABASE_URL": storetest.OwnerDSN(),
		"BULKHEAD_REDIS_URL":          "",
		"BULKHEAD_UPSTREAM_URL":       mockUpstream(t, mock.Options{}),
		"BULKHEAD_SPOOL_DIR":          t.TempDir(),
		"BULKHEAD_LOG_LEVEL":          "warn",
		"BULKHEAD_MEMORY_LIMIT":       "300MiB",
	})
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_gc_gomemlimit_bytes "); ok {
			if v != "3.145728e+08" {
				t.Errorf("go_gc_gomemlimit_bytes %s, want 300 MiB (3.145728e+08)", v)
			}
			return
		}
	}
	t.Error("/metrics lacks go_gc_gomemlimit_bytes")
}
