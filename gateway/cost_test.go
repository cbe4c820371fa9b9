package gateway

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// A request to a catalog model carries its cost at the prices in force and
// their snapshot; a request to a model only the configured routes name has
// no cost. The cost is counted per model in Prometheus.
func TestCostPerRequest(t *testing.T) {
	h := newHarness(t, catalogConfig(config.ModelAccessAll))
	h.withCatalog()
	ctx := context.Background()
	_, key, _ := h.tenant(1000)
	shared := "shared-" + uuid.NewString()[:8]
	prices := store.Prices{Input: 150_000, CachedInput: 75_000, Output: 600_000}
	if _, err := h.admin.AddModel(ctx, store.Model{Name: shared, Upstream: "mock", InputPrice: prices.Input,
		CachedInputPrice: prices.CachedInput, OutputPrice: prices.Output, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	auth := []string{"Authorization", "Bearer " + key}
	r := h.do("POST", "/v1/chat/completions", chatWith(shared), auth...)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	rec := h.rec.find(t, r.headers["x-request-id"])
	if !rec.Priced || rec.Prices != prices || rec.PromptTokens == 0 {
		t.Fatalf("record %+v: want priced at %+v", rec, prices)
	}
	if want := prices.Cost(rec.PromptTokens, rec.CacheReadTokens, rec.CompletionTokens); rec.Cost != want || want == 0 {
		t.Errorf("cost %d, want %d", rec.Cost, want)
	}
	if got := testutil.ToFloat64(h.srv.metrics.cost.usd.WithLabelValues(shared)); got != float64(rec.Cost)/1e6 {
		t.Errorf("bulkhead_cost_usd_total{model=%q} = %v, want %v", shared, got, float64(rec.Cost)/1e6)
	}

	// Prompt tokens the provider read from its cache
	// (usage.prompt_tokens_details.cached_tokens) cost the cached-input
	// price, streamed or not.
	for _, body := range []string{chatWith(shared), strings.Replace(chatWith(shared), `{`, `{"stream":true,`, 1)} {
		r = h.do("POST", "/v1/chat/completions", body, append([]string{"X-Stainless-Mock-Cached-Tokens", "3"}, auth...)...)
		if r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		rec = h.rec.find(t, r.headers["x-request-id"])
		want := store.MicroUSD((int64(rec.PromptTokens-3)*150_000 + 3*75_000 + int64(rec.CompletionTokens)*600_000 + 999_999) / 1_000_000)
		if rec.CacheReadTokens != 3 || rec.PromptTokens <= 3 || rec.Cost != want {
			t.Errorf("stream %v: cached %d of %d prompt tokens, cost %d; want 3 cached, cost %d", rec.Stream, rec.CacheReadTokens, rec.PromptTokens, rec.Cost, want)
		}
	}

	r = h.do("POST", "/v1/chat/completions", chatWith("gpt-4o-mini"), auth...)
	if rec := h.rec.find(t, r.headers["x-request-id"]); r.status != 200 || rec.Priced || rec.Cost != 0 {
		t.Errorf("a model outside the catalog: %d, record %+v: want no cost", r.status, rec)
	}
}

// The end user of a row: the body's "user" for key callers; the JWT's
// user_id claim, which wins over the body, for token callers. Over-long or
// malformed ones are refused.
func TestEndUser(t *testing.T) {
	secret := config.Secret(strings.Repeat("s", 32))
	h := newHarness(t, func(c *config.Config) { c.JWTHS256Secret = secret })
	org, key, _ := h.tenant(1000)
	body := func(user string) string {
		return `{"model":"gpt-4o-mini","user":` + user + `,"messages":[{"role":"user","content":"hi"}]}`
	}
	r := h.do("POST", "/v1/chat/completions", body(`"alice"`), "Authorization", "Bearer "+key)
	if rec := h.rec.find(t, r.headers["x-request-id"]); r.status != 200 || rec.EndUser != "alice" {
		t.Errorf("key caller: %d, end user %q, want alice", r.status, rec.EndUser)
	}
	token := func(user any) string {
		c := jwt.MapClaims{"organization_id": org.String(), "exp": time.Now().Add(time.Hour).Unix()}
		if user != nil {
			c["user_id"] = user
		}
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(secret.Reveal()))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	r = h.do("POST", "/v1/chat/completions", body(`"mallory"`), "Authorization", "Bearer "+token("bob"))
	if rec := h.rec.find(t, r.headers["x-request-id"]); r.status != 200 || rec.EndUser != "bob" {
		t.Errorf("JWT caller: %d, end user %q, want bob (the claim wins)", r.status, rec.EndUser)
	}
	r = h.do("POST", "/v1/chat/completions", body(`"carol"`), "Authorization", "Bearer "+token(nil))
	if rec := h.rec.find(t, r.headers["x-request-id"]); r.status != 200 || rec.EndUser != "carol" {
		t.Errorf("JWT without user_id: %d, end user %q, want carol", r.status, rec.EndUser)
	}
	for name, user := range map[string]string{"too long": `"` + strings.Repeat("u", 257) + `"`, "number": `42`, "control": `"a\u0001b"`} {
		if r := h.do("POST", "/v1/chat/completions", body(user), "Authorization", "Bearer "+key); r.status != 400 || !strings.Contains(string(r.body), `"param":"user"`) {
			t.Errorf("%s user: %d %s, want 400 on param user", name, r.status, r.body)
		}
	}
	if r := h.do("POST", "/v1/chat/completions", body(`null`), "Authorization", "Bearer "+token(strings.Repeat("u", 257))); r.status != 401 {
		t.Errorf("over-long user_id claim: %d %s, want 401", r.status, r.body)
	}
}

// GET /api/v1/usage?group_by=user groups the caller's rows by end user,
// with their cost; tenant B sees none of A's end users.
func TestUsageByEndUser(t *testing.T) {
	h := newHarness(t, nil)
	orgA, keyA, _ := h.tenant(1000)
	_, keyB, _ := h.tenant(1000)
	user := "enduser-" + uuid.NewString()[:8]
	if _, err := storetest.OwnerPool(t).Exec(context.Background(), `INSERT INTO prompts (organization_id, id, request_id, model, status,
			prompt_tokens, completion_tokens, usage_tokens, created_at, end_user, cost_micros)
		SELECT $1, prompts_row_id(now() - interval '1 minute', gen_random_uuid()), 'eu-' || g, 'm', 200, 1, 1, 2,
			now() - interval '1 minute', $2, 1500 FROM generate_series(1, 3) g`, orgA, user); err != nil {
		t.Fatal(err)
	}
	r := h.do("GET", "/api/v1/usage?group_by=user", "", "Authorization", "Bearer "+keyA)
	if r.status != 200 || !strings.Contains(string(r.body), `"group":"`+user+`","requests":3`) || !strings.Contains(string(r.body), `"cost_usd":"0.0045"`) {
		t.Errorf("A's usage by user: %d %s", r.status, r.body)
	}
	if r := h.do("GET", "/api/v1/usage?group_by=user", "", "Authorization", "Bearer "+keyB); r.status != 200 || strings.Contains(string(r.body), user) {
		t.Errorf("B's usage by user: %d %s", r.status, r.body)
	}
}
