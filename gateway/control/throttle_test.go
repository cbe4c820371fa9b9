package control

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/ratelimit"
	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// Two control servers (replicas) share failure budgets through Redis:
// failed logins and bearers from one address on either spend the
// address's budget, and past it both answer 429 with Retry-After and an
// OpenAI-shaped error before checking the credential, even a valid one.
func TestThrottleFailedCredentialsPerAddress(t *testing.T) {
	rdb := storetest.Redis(t)
	prefix := "test:ctlfail:" + uuid.NewString()
	with := func(o *Options) {
		o.Failures = ratelimit.New(rdb, ratelimit.Options{Prefix: prefix})
		o.FailuresPerMinutePerAddress = 4
	}
	one, two := newHarness(t, with), newHarness(t, with)
	valid, _ := one.operator(store.ScopeRead, nil)
	bad, _ := NewOperatorToken()
	one.must(200, "GET", "/admin/v1/me", valid, nil) // a valid credential costs nothing
	for i := range 4 {
		h := []*harness{one, two}[i%2]
		if i%2 == 0 {
			h.must(401, "POST", "/admin/v1/session", "", map[string]any{"credential": bad})
		} else {
			h.must(401, "GET", "/admin/v1/me", bad, nil)
		}
	}
	for _, h := range []*harness{one, two} {
		for _, cred := range []string{bad, valid} {
			r := h.do("GET", "/admin/v1/me", cred, nil)
			code, _, msg := r.errorParts(t)
			if r.status != 429 || code != "too_many_failed_credentials" || !strings.Contains(msg, "Retry after") {
				t.Errorf("after 4 failures: %d %s, want 429 too_many_failed_credentials", r.status, r.body)
			}
			if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 || s > 60 {
				t.Errorf("Retry-After %q, want 1 to 60 seconds", r.header.Get("Retry-After"))
			}
		}
		r := h.do("POST", "/admin/v1/session", "", map[string]any{"credential": valid})
		if r.status != 429 {
			t.Errorf("a login after 4 failures: %d %s, want 429", r.status, r.body)
		}
	}
}

// Guesses at one organization's admin keys spend that organization's
// prefix budget whatever their address: past it, keys naming that
// organization get 429 on every replica, while another organization's
// keys and operator tokens are checked as usual.
func TestThrottleFailedCredentialsPerPrefix(t *testing.T) {
	rdb := storetest.Redis(t)
	prefix := "test:ctlfail:" + uuid.NewString()
	with := func(o *Options) {
		o.Failures = ratelimit.New(rdb, ratelimit.Options{Prefix: prefix})
		o.FailuresPerMinutePerPrefix = 3
	}
	one, two := newHarness(t, with), newHarness(t, with)
	ctx := context.Background()
	a, _ := one.admin.CreateOrg(ctx, "throttled a")
	b, _ := one.admin.CreateOrg(ctx, "throttled b")
	write, _ := one.operator(store.ScopeWrite, nil)
	var ka, kb struct{ Key string }
	one.must(201, "POST", "/admin/v1/organizations/"+a.ID.String()+"/admin-keys", write, map[string]any{"name": "a"}).json(t, &ka)
	one.must(201, "POST", "/admin/v1/organizations/"+b.ID.String()+"/admin-keys", write, map[string]any{"name": "b"}).json(t, &kb)
	for i := range 3 {
		guess, _, _ := NewOrgAdminKey(a.ID)
		[]*harness{one, two}[i%2].must(401, "GET", "/admin/v1/me", guess, nil)
	}
	for _, h := range []*harness{one, two} {
		if r := h.do("GET", "/admin/v1/me", ka.Key, nil); r.status != 429 || r.header.Get("Retry-After") == "" {
			t.Errorf("A's key after 3 guesses at A's keys: %d %s, want 429 with Retry-After", r.status, r.body)
		}
		h.must(200, "GET", "/admin/v1/me", kb.Key, nil)
		h.must(200, "GET", "/admin/v1/me", write, nil)
	}
}

// One credential opens at most loginsPerMinutePerActor sessions a minute
// (sessions in Redis have no global cap), then 429 with Retry-After;
// another credential is not affected.
func TestLoginsPerActor(t *testing.T) {
	rdb := storetest.Redis(t)
	prefix := "test:ctlfail:" + uuid.NewString()
	h := newHarness(t, func(o *Options) {
		o.Failures = ratelimit.New(rdb, ratelimit.Options{Prefix: prefix})
		o.Sessions = rdb
	})
	tok, _ := h.operator(store.ScopeRead, nil)
	other, _ := h.operator(store.ScopeRead, nil)
	for range loginsPerMinutePerActor {
		h.must(201, "POST", "/admin/v1/session", "", map[string]any{"credential": tok})
	}
	r := h.do("POST", "/admin/v1/session", "", map[string]any{"credential": tok})
	if code, _, _ := r.errorParts(t); r.status != 429 || code != "too_many_logins" || r.header.Get("Retry-After") == "" {
		t.Errorf("login %d: %d %s, want 429 too_many_logins with Retry-After", loginsPerMinutePerActor+1, r.status, r.body)
	}
	h.must(201, "POST", "/admin/v1/session", "", map[string]any{"credential": other})
	h.must(200, "GET", "/admin/v1/me", tok, nil) // the credential itself still works
}
