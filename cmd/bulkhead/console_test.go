package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/cmd/mockllm/mock"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// chromiumPath is Debian's Chromium, which deploy/dev/services.sh
// installs.
const chromiumPath = "/usr/bin/chromium"

// consoleJWTSecret signs the tenant administrator's JWT of the browser
// test (BULKHEAD_JWT_HS256_SECRET of its gateway).
const consoleJWTSecret = "console-browser-test-secret-of-32-bytes+"

// xssPrompt is a prompt that would run script if the console rendered it
// as markup.
const xssPrompt = `<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">`

// The console in a real browser (headless Chromium through chromedp),
// against `bulkhead serve` with its control plane, PostgreSQL and Redis:
// an operator logs in, creates an organization and a key in the UI, calls
// the gateway with that key, sees the calls in the plots and the request
// log (the markup prompt shown as text, inert), revokes the key in the UI
// and sees the next call refused; a tenant administrator of another
// organization logs in and reaches none of the first one's pages or data
// by URL. Screenshots of each page go to CONSOLE_SCREENSHOTS (a
// directory; default the test's temporary one).
func TestConsoleInBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		storetest.Unavailable(t, "Chromium ("+chromiumPath+", installed by deploy/dev/services.sh)", err)
	}
	storetest.Admin(t) // migrated, or skip/fail loudly
	rdb := storetest.Redis(t)
	rdb.Close()
	artifacts := os.Getenv("CONSOLE_SCREENSHOTS")
	if artifacts == "" {
		artifacts = t.TempDir()
	} else if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}

	listen, ctlAddr := freeAddr(t), freeAddr(t)
	startGateway(t, map[string]string{
		"BULKHEAD_LISTEN":             listen,
		"BULKHEAD_ADMIN_LISTEN":       freeAddr(t),
		"BULKHEAD_CONTROL_LISTEN":     ctlAddr,
		"BULKHEAD_DATABASE_URL":       storetest.AppDSN(),
		"BULKHEAD_ADMIN_DATABASE_URL": storetest.OwnerDSN(),
		"BULKHEAD_REDIS_URL":          storetest.RedisURL(),
		"BULKHEAD_UPSTREAM_URL":       mockUpstream(t, mock.Options{}),
		"BULKHEAD_JWT_HS256_SECRET":   consoleJWTSecret,
		"BULKHEAD_SPOOL_DIR":          t.TempDir(),
		"BULKHEAD_LOG_LEVEL":          "warn",
	})
	console := "http://" + ctlAddr + "/"
	gateway := "http://" + listen + "/v1/chat/completions"

	out, _, err := cli(t, "admin-token", "create", "--name", "browser test", "--scope", "write", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var opToken struct {
		ID, Token string
	}
	if err := json.Unmarshal([]byte(out), &opToken); err != nil || !strings.HasPrefix(opToken.Token, "bhadm_") {
		t.Fatalf("admin-token create --json: %q (%v)", out, err)
	}

	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath), chromedp.Headless, chromedp.NoSandbox, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1280, 1000))
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(browser, 3*time.Minute)
	defer cancel()
	b := &browserRun{t: t, ctx: ctx, dir: artifacts}
	id := func(s string) chromedp.ID { return chromedp.ID(s) }
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }

	// The operator logs in and creates an organization and a key.
	orgName := "browser-" + uuid.NewString()[:8]
	b.do("operator login", chromedp.Navigate(console), chromedp.WaitVisible(id("login-credential")),
		chromedp.SendKeys(id("login-credential"), opToken.Token), chromedp.Click(id("login-submit")),
		chromedp.WaitVisible(id("org-name")))
	html, url := get(b, "page", chromedp.OuterHTML(css("html"))), get(b, "location", chromedp.Location())
	if strings.Contains(html, opToken.Token) || strings.Contains(url, "bhadm_") || strings.Contains(url, "bhs_") {
		t.Error("the operator token is in the page or the URL after login")
	}
	b.do("create organization", chromedp.SendKeys(id("org-name"), orgName), chromedp.Click(id("org-create")),
		chromedp.WaitVisible(id("key-name")))
	title, url := get(b, "title", chromedp.Text(id("org-title"))), get(b, "location", chromedp.Location())
	orgA := url[strings.LastIndex(url, "/")+1:]
	if title != orgName || uuid.Validate(orgA) != nil {
		t.Fatalf("organization page %q at %s", title, url)
	}
	b.do("create key", chromedp.SendKeys(id("key-name"), "ui key"), chromedp.Click(id("key-create")), chromedp.WaitVisible(id("secret-key")))
	key := get(b, "key", chromedp.Text(id("secret-key")))
	if !strings.HasPrefix(key, "sk_") {
		t.Fatalf("the new key shown is %q", key)
	}
	b.shot("1-operator-key-created")
	b.do("dismiss the key", chromedp.Click(id("secret-dismiss")), chromedp.WaitNotPresent(id("secret-key")))

	// Calls through the gateway with that key, one with a markup prompt.
	prompts := []string{"hello from the browser test", "a second call", xssPrompt}
	for _, p := range prompts {
		if st := chat(t, gateway, key, p); st != 200 {
			t.Fatalf("call with the new key: %d", st)
		}
	}
	// The request log's writer commits in batches: wait for the rows.
	owner := storetest.OwnerPool(t)
	deadline := time.Now().Add(30 * time.Second)
	for n := 0; n < len(prompts); {
		if err := owner.QueryRow(context.Background(), `SELECT count(*) FROM prompts WHERE organization_id = $1`, orgA).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d calls in the request log after 30s", n, len(prompts))
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The plots show them (the page reloads its data on navigation).
	b.do("plots", chromedp.Navigate(console+"#/orgs"), chromedp.WaitVisible(id("org-list")),
		chromedp.Navigate(console+"#/orgs/"+orgA), chromedp.WaitVisible(css("#plot-requests canvas")))
	if s := get(b, "requests plot", chromedp.Text(id("plot-requests-summary"))); s != "gpt-4o-mini: 3" {
		t.Errorf("requests plot summary %q, want gpt-4o-mini: 3", s)
	}
	if s := get(b, "tokens plot", chromedp.Text(id("plot-tokens-summary"))); !strings.HasPrefix(s, "gpt-4o-mini: ") || s == "gpt-4o-mini: 0" {
		t.Errorf("tokens plot summary %q", s)
	}
	keySummary, statusSummary := get(b, "key plot", chromedp.Text(id("plot-keys-summary"))), get(b, "status panel", chromedp.Text(id("plot-latency-summary")))
	if keySummary != "ui key: 3" || statusSummary != "status ok: 3" {
		t.Errorf("key plot %q, status panel %q; want ui key: 3 and status ok: 3", keySummary, statusSummary)
	}
	b.do("range picker", chromedp.SetValue(id("range"), "7"), chromedp.Evaluate[chromedp.Void](`document.getElementById('range').dispatchEvent(new Event('change'))`),
		chromedp.Sleep(500*time.Millisecond), chromedp.WaitVisible(css("#plot-requests canvas")))
	if s := get(b, "requests plot, 7 days", chromedp.Text(id("plot-requests-summary"))); s != "gpt-4o-mini: 3" {
		t.Errorf("requests plot over 7 days %q", s)
	}
	b.shot("2-operator-usage")

	// The request log: three rows; the markup prompt shown as text, inert.
	b.do("request log", chromedp.Click(id("logs-link")), chromedp.WaitVisible(css("#logs tr[data-prompt-id]")))
	if rows := get(b, "rows", chromedp.Evaluate[int](`document.querySelectorAll('#logs tr[data-prompt-id]').length`)); rows != len(prompts) {
		t.Errorf("request log shows %d rows, want %d", rows, len(prompts))
	}
	if !get(b, "open the markup prompt", chromedp.Evaluate[bool](`(() => { for (const tr of document.querySelectorAll('#logs tr[data-prompt-id]')) {
			if (tr.textContent.includes('<script>')) { tr.click(); return true } } return false })()`)) {
		t.Fatal("no row of the request log shows the markup prompt as text")
	}
	b.do("detail", chromedp.WaitVisible(id("log-detail-prompt")),
		chromedp.Sleep(300*time.Millisecond)) // an injected <img onerror> would have fired by now
	shownPrompt := get(b, "prompt", chromedp.Text(id("log-detail-prompt")))
	if !strings.Contains(shownPrompt, xssPrompt) {
		t.Errorf("the prompt is shown as %q, want its text %q", shownPrompt, xssPrompt)
	}
	xss := get(b, "window.__xss", chromedp.Evaluate[string](`String(window.__xss)`))
	elems := get(b, "injected elements", chromedp.Evaluate[int](`document.querySelectorAll('main img, main script').length`))
	if xss != "undefined" || elems != 0 {
		t.Errorf("the markup prompt ran: window.__xss = %s, %d img/script elements in the page", xss, elems)
	}
	b.shot("3-request-log-markup-inert")
	b.do("filter the log by status", chromedp.SendKeys(id("f-status"), "404"), chromedp.Click(id("log-apply")),
		chromedp.WaitNotPresent(css("#logs tr[data-prompt-id]")))

	// Revoking the key in the UI: the next call is refused.
	revoke := css(`#keys tr[data-state="active"] button[data-action="revoke"]`)
	b.do("revoke", chromedp.Navigate(console+"#/orgs/"+orgA), chromedp.WaitVisible(revoke),
		chromedp.Click(revoke), chromedp.Click(revoke), chromedp.WaitVisible(css(`#keys tr[data-state="revoked"]`)))
	deadline = time.Now().Add(5 * time.Second)
	for chat(t, gateway, key, "after revocation") != 401 {
		if time.Now().After(deadline) {
			t.Fatal("the revoked key still works 5s after the revocation in the console")
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.shot("4-operator-key-revoked")

	// Rotating a key, like revoking one, takes a second click: one click
	// changes nothing. Then the new key works, and so does the old one,
	// for the overlap hour.
	b.do("second key", chromedp.SendKeys(id("key-name"), "rotated key"),
		chromedp.Click(id("key-create")), chromedp.WaitVisible(id("secret-key")))
	second := get(b, "second key", chromedp.Text(id("secret-key")))
	b.do("dismiss the second key", chromedp.Click(id("secret-dismiss")), chromedp.WaitNotPresent(id("secret-key")))
	rotate := css(`#keys tr[data-key-name="rotated key"] button[data-action="rotate"]`)
	b.do("rotate, one click", chromedp.WaitVisible(rotate), chromedp.Click(rotate), chromedp.Sleep(500*time.Millisecond))
	if rows, shown := get(b, "keys after one click", chromedp.Evaluate[int](`document.querySelectorAll('#keys tr').length`)),
		get(b, "secret after one click", chromedp.Evaluate[bool](`document.getElementById('secret-key') !== null`)); rows != 2 || shown {
		t.Errorf("one click on Rotate: %d keys listed (want 2), a new key shown: %v", rows, shown)
	}
	b.do("rotate, confirmed", chromedp.Click(rotate), chromedp.WaitVisible(id("secret-key")))
	rotated := get(b, "rotated key", chromedp.Text(id("secret-key")))
	if !strings.HasPrefix(rotated, "sk_") || rotated == second {
		t.Fatalf("the rotated key shown is %q", rotated)
	}
	if st, old := chat(t, gateway, rotated, "with the rotated key"), chat(t, gateway, second, "with the old key in its hour"); st != 200 || old != 200 {
		t.Errorf("after the rotation: the new key %d, the old one %d; want 200 and 200", st, old)
	}
	b.shot("5-operator-key-rotated")
	b.do("logout", chromedp.Click(id("logout")), chromedp.WaitVisible(id("login-credential")))
	if stored := get(b, "storage", chromedp.Evaluate[string](`sessionStorage.getItem('bh_session') || ''`)); stored != "" {
		t.Error("the session is still stored after logout")
	}

	// A tenant administrator of B: its own organization, nothing of A's.
	orgB, _ := cliTenant(t, "browser-b")
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "admin-of-b", "organization_id": orgB, "role": "admin",
		"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()}).SignedString([]byte(consoleJWTSecret))
	if err != nil {
		t.Fatal(err)
	}
	b.do("tenant login", chromedp.SendKeys(id("login-credential"), tok), chromedp.Click(id("login-submit")), chromedp.WaitVisible(id("org-title")))
	if url := get(b, "location", chromedp.Location()); !strings.HasSuffix(url, "#/orgs/"+orgB) {
		t.Errorf("the tenant administrator landed on %s, want its organization", url)
	}
	b.shot("6-tenant-own-organization")
	for _, page := range []string{"#/orgs/" + orgA, "#/orgs/" + orgA + "/logs"} {
		b.do("tenant at "+page, chromedp.Navigate(console+page), chromedp.WaitVisible(id("notfound")))
		if text := get(b, "page text", chromedp.Text(css("main"))); strings.Contains(text, orgName) || strings.Contains(text, "ui key") {
			t.Errorf("the tenant administrator of B sees A's data at %s: %q", page, text)
		}
	}
	b.shot("7-tenant-other-organization-not-found")
	statuses := get(b, "tenant fetches A's data with its session", chromedp.Evaluate[[]int](`Promise.all(['', '/keys', '/prompts', '/usage', '/usage/series'].map((p) =>
		fetch('/admin/v1/organizations/`+orgA+`' + p, {headers: {Authorization: 'Bearer ' + JSON.parse(sessionStorage.getItem('bh_session')).token}})
		.then((r) => r.status)))`, chromedp.EvalAwaitPromise))
	if len(statuses) != 5 {
		t.Errorf("got %d statuses, want 5", len(statuses))
	}
	for i, st := range statuses {
		if st != 404 {
			t.Errorf("tenant B's fetch %d of A's data: %d, want 404", i, st)
		}
	}
	t.Logf("screenshots in %s", artifacts)
}

// browserRun runs the browser test's steps, saving a screenshot when one
// fails.
type browserRun struct {
	t   *testing.T
	ctx context.Context
	dir string
}

func (b *browserRun) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.shot("failed")
		b.t.Fatalf("%s: %v", what, err)
	}
}

// get runs one action that returns a value.
func get[T any](b *browserRun, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, a)
	if err != nil {
		b.shot("failed")
		b.t.Fatalf("%s: %v", what, err)
	}
	return v
}

// shot saves a screenshot of the viewport as dir/name.png.
func (b *browserRun) shot(name string) {
	png, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err == nil {
		err = os.WriteFile(filepath.Join(b.dir, name+".png"), png, 0o644)
	}
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
	}
}

// chat sends one chat completion with key and returns the status.
func chat(t *testing.T, url, key, prompt string) int {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"model": "gpt-4o-mini", "messages": []map[string]string{{"role": "user", "content": prompt}}})
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
