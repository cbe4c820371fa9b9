package control

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/bulkheadhq/bulkhead/store"
)

// The vendored files are the ones console/VENDOR.md records: same
// version line, same checksum.
func TestVendoredAssets(t *testing.T) {
	notes, err := os.ReadFile("console/VENDOR.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile(`(?m)^\| (\S+) \| [^|]+ \| (\d+\.\d+\.\d+) \| ([0-9a-f]{64}) \|$`)
	rows := row.FindAllStringSubmatch(string(notes), -1)
	if len(rows) < 2 {
		t.Fatalf("console/VENDOR.md lists %d files, want uPlot's two", len(rows))
	}
	for _, r := range rows {
		b, err := console.ReadFile("console/" + r[1])
		if err != nil {
			t.Errorf("%s: %v", r[1], err)
			continue
		}
		sum := sha256.Sum256(b)
		if got := hex.EncodeToString(sum[:]); got != r[3] {
			t.Errorf("%s: sha256 %s, VENDOR.md says %s (version %s)", r[1], got, r[3], r[2])
		}
	}
	js, _ := console.ReadFile("console/uPlot.iife.min.js")
	if !strings.Contains(string(js), "uPlot") {
		t.Error("uPlot.iife.min.js does not define uPlot")
	}
}

// The console's page: strict CSP and its companions on every answer, no
// inline script or style, no handler attributes, no secret.
func TestConsolePage(t *testing.T) {
	h := newHarness(t)
	tok, _ := h.operator(store.ScopeRead, nil)
	r := h.must(200, "GET", "/", "", nil)
	csp := r.header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("CSP allows inline code: %q", csp)
	}
	if r.header.Get("X-Content-Type-Options") != "nosniff" || r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("headers %v", r.header)
	}
	page := string(r.body)
	if regexp.MustCompile(`(?i)<script>|<style|\son[a-z]+=|style=`).MatchString(page) {
		t.Errorf("index.html has inline script, style or handler attributes")
	}
	if strings.Contains(page, tok) || strings.Contains(page, "bhadm_") {
		t.Error("the page carries a token")
	}
	for _, p := range []string{"/console.js", "/console.css", "/uPlot.iife.min.js", "/uPlot.min.css"} {
		h.must(200, "GET", p, "", nil)
	}
	js := string(h.must(200, "GET", "/console.js", "", nil).body)
	if strings.Contains(js, "innerHTML") || strings.Contains(js, "insertAdjacentHTML") || strings.Contains(js, "document.write") {
		t.Error("console.js writes markup; it must build elements and text nodes only")
	}
	h.must(404, "GET", "/VENDOR.md", "", nil)
	h.must(404, "GET", "/secret", "", nil)
}
