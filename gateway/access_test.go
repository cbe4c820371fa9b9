package gateway

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway/catalog"
	"github.com/bulkheadhq/bulkhead/store"
)

// catalogConfig serves the mock as the named upstream "mock" for
// gpt-4o-mini and the prefix shared-*, without a default upstream: a
// model no route serves is then the gateway's own 404, the answer a
// hidden model must match; and a shared model revoked for a tenant is
// one the configured routes would serve, so only the catalog refuses it.
func catalogConfig(access string) func(*config.Config) {
	return func(cfg *config.Config) {
		cfg.Upstreams = []config.Upstream{{Name: "mock", Kind: "openai", URL: cfg.UpstreamURL, Models: []string{"gpt-4o-mini", "shared-*"}}}
		cfg.UpstreamURL = ""
		cfg.ModelAccessDefault = access
	}
}

// withCatalog starts another gateway of h, with a model catalog of its
// own on h's store and Redis (a replica), and makes h talk to it. It
// returns the catalog.
func (h *harness) withCatalog() *catalog.Catalog {
	h.t.Helper()
	cat := h.runCatalog()
	h.start(Deps{Auth: h.auth, Recorder: h.rec, Prompts: h.st, Limiter: h.limiter, Catalog: cat})
	return cat
}

// runCatalog runs a model catalog on h's store and Redis until the test
// ends.
func (h *harness) runCatalog() *catalog.Catalog {
	h.t.Helper()
	cat, err := catalog.New(catalog.Options{Source: h.st, Redis: h.rdb, DefaultAllow: h.cfg.ModelAccessDefault == config.ModelAccessAll, TTL: time.Minute})
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { cat.Run(ctx); close(done) }() //nolint:errcheck // nil on cancel
	h.t.Cleanup(func() { cancel(); <-done })
	return cat
}

func chatWith(model string) string {
	return `{"model":"` + model + `","messages":[{"role":"user","content":"hi"}]}`
}

// withoutRequestID is an error body with its request id blanked, the one
// part two answers may differ in.
func withoutRequestID(t *testing.T, body []byte) string {
	t.Helper()
	var e map[string]map[string]any
	if err := json.Unmarshal(body, &e); err != nil || e["error"] == nil {
		t.Fatalf("not an error body: %s", body)
	}
	id, _ := e["error"]["request_id"].(string)
	if id == "" {
		t.Errorf("error body without a request id: %s", body)
	}
	return strings.ReplaceAll(string(body), id, "REQUEST_ID")
}

func modelIDs(t *testing.T, r reply) map[string]bool {
	t.Helper()
	var list struct {
		Data []modelEntry `json:"data"`
	}
	if r.status != 200 || json.Unmarshal(r.body, &list) != nil {
		t.Fatalf("GET /v1/models: %d %s", r.status, r.body)
	}
	ids := map[string]bool{}
	for _, m := range list.Data {
		ids[m.ID] = true
	}
	return ids
}

// Tenant B cannot reach A's private model, nor a shared model revoked
// for it: each is, to B, exactly a model that does not exist (requests,
// /v1/models, /v1/models/{id}); A uses both.
func TestCatalogAccess(t *testing.T) {
	h := newHarness(t, catalogConfig(config.ModelAccessAll))
	h.withCatalog()
	ctx := context.Background()
	orgA, keyA, kA := h.tenant(1000)
	orgB, keyB, kB := h.tenant(1000)
	shared, private := "shared-"+uuid.NewString()[:8], "private-"+uuid.NewString()[:8]
	if _, err := h.admin.AddModel(ctx, store.Model{Name: shared, Upstream: "mock", InputPrice: 1, OutputPrice: 2, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.admin.AddModel(ctx, store.Model{OrgID: &orgA, Name: private + "1", Upstream: "mock", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	if err := h.admin.SetModelAccess(ctx, orgB, shared, false); err != nil {
		t.Fatal(err)
	}
	if err := catalog.InvalidateOrg(ctx, h.rdb, orgB); err != nil {
		t.Fatal(err)
	}
	auth := func(key string) []string { return []string{"Authorization", "Bearer " + key} }

	for _, m := range []string{shared, private + "1", "gpt-4o-mini"} {
		if r := h.do("POST", "/v1/chat/completions", chatWith(m), auth(keyA)...); r.status != 200 {
			t.Errorf("A's request of %s: %d %s", m, r.status, r.body)
		}
	}
	if r := h.do("POST", "/v1/chat/completions", chatWith("gpt-4o-mini"), auth(keyB)...); r.status != 200 {
		t.Errorf("B's request of a configured model: %d %s", r.status, r.body)
	}

	nonexistent := h.do("POST", "/v1/chat/completions", chatWith("nonexistent-"+uuid.NewString()[:8]), auth(keyB)...)
	if nonexistent.status != 404 {
		t.Fatalf("a nonexistent model: %d %s", nonexistent.status, nonexistent.body)
	}
	for _, m := range []string{shared, private + "1"} {
		r := h.do("POST", "/v1/chat/completions", chatWith(m), auth(keyB)...)
		if r.status != nonexistent.status || withoutRequestID(t, r.body) != withoutRequestID(t, nonexistent.body) ||
			r.headers["content-type"] != nonexistent.headers["content-type"] {
			t.Errorf("B's request of %s: %d %s; want exactly the nonexistent model's %d %s", m, r.status, r.body, nonexistent.status, nonexistent.body)
		}
		one := h.do("GET", "/v1/models/"+m, "", auth(keyB)...)
		ghost := h.do("GET", "/v1/models/"+m+"x", "", auth(keyB)...)
		if one.status != 404 || withoutRequestID(t, one.body) != strings.Replace(withoutRequestID(t, ghost.body), m+"x", m, 1) {
			t.Errorf("B's GET /v1/models/%s: %d %s; want the nonexistent model's %s", m, one.status, one.body, ghost.body)
		}
		if r := h.do("GET", "/v1/models/"+m, "", auth(keyA)...); r.status != 200 {
			t.Errorf("A's GET /v1/models/%s: %d %s", m, r.status, r.body)
		}
	}

	a, b := modelIDs(t, h.do("GET", "/v1/models", "", auth(keyA)...)), modelIDs(t, h.do("GET", "/v1/models", "", auth(keyB)...))
	if !a[shared] || !a[private+"1"] || !a["gpt-4o-mini"] {
		t.Errorf("A's /v1/models %v lacks its models", a)
	}
	if b[shared] || b[private+"1"] || !b["gpt-4o-mini"] {
		t.Errorf("B's /v1/models %v: want gpt-4o-mini, not %s nor %s", b, shared, private+"1")
	}

	// The usage API: A's private model is in A's groups, never in B's.
	seedPromptsWith(t, orgA, kA.ID, 4, private, 10, 5)
	seedPromptsWith(t, orgB, kB.ID, 2, "gpt-4o-mini-", 10, 5)
	for key, want := range map[string]bool{keyA: true, keyB: false} {
		r := h.do("GET", "/api/v1/usage?group_by=model", "", auth(key)...)
		if r.status != 200 || strings.Contains(string(r.body), private) != want {
			t.Errorf("usage by model (A's private model expected: %v): %d %s", want, r.status, r.body)
		}
	}
}

// Under BULKHEAD_MODEL_ACCESS_DEFAULT=none a tenant uses only granted
// shared models and its own; a grant on one replica is applied by another
// through Redis, without waiting for the TTL.
func TestCatalogAccessDefaultNone(t *testing.T) {
	h := newHarness(t, catalogConfig(config.ModelAccessNone))
	h.withCatalog()
	replica := &harness{t: t, net: h.net, cfg: h.cfg, st: h.st, rdb: h.rdb, auth: h.auth, rec: h.rec, limiter: h.limiter}
	replica.withCatalog()
	ctx := context.Background()
	org, key, _ := h.tenant(1000)
	shared := "granted-" + uuid.NewString()[:8]
	if _, err := h.admin.AddModel(ctx, store.Model{Name: shared, Upstream: "mock", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	auth := []string{"Authorization", "Bearer " + key}
	for _, gw := range []*harness{h, replica} {
		for _, m := range []string{shared, "gpt-4o-mini"} {
			if r := gw.do("POST", "/v1/chat/completions", chatWith(m), auth...); r.status != 404 {
				t.Errorf("%s before any grant: %d %s, want 404", m, r.status, r.body)
			}
		}
		if ids := modelIDs(t, gw.do("GET", "/v1/models", "", auth...)); len(ids) != 0 {
			t.Errorf("/v1/models before any grant: %v, want none", ids)
		}
	}
	if err := h.admin.SetModelAccess(ctx, org, shared, true); err != nil {
		t.Fatal(err)
	}
	if err := catalog.InvalidateOrg(ctx, h.rdb, org); err != nil {
		t.Fatal(err)
	}
	// Both replicas cached the refusal for a minute (their TTL): only the
	// event can make them serve it now.
	for _, gw := range []*harness{h, replica} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			r := gw.do("POST", "/v1/chat/completions", chatWith(shared), auth...)
			if r.status == 200 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the granted model is still refused: %d %s", r.status, r.body)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if ids := modelIDs(t, gw.do("GET", "/v1/models", "", auth...)); !ids[shared] || ids["gpt-4o-mini"] {
			t.Errorf("/v1/models after the grant: %v, want %s alone", ids, shared)
		}
	}
}
