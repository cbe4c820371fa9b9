package control

import (
	"context"
	"crypto/sha256"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

type orgJSON struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	CaptureMode string `json:"capture_mode"`
}

// The operator's whole life cycle of an organization and its keys, over
// HTTP, each change audited under the token's id and told to the gateways.
func TestOperatorLifecycle(t *testing.T) {
	h := newHarness(t)
	tok, tokID := h.operator(store.ScopeWrite, nil)
	ctx := context.Background()

	// An idempotent create: the retry answers the first organization.
	idem := "signup-" + uuid.NewString()
	r := h.must(201, "POST", "/admin/v1/organizations", tok, map[string]any{"name": "acme"}, "Idempotency-Key", idem)
	var org orgJSON
	r.json(t, &org)
	if org.Name != "acme" || org.CaptureMode != "full" {
		t.Fatalf("created %+v", org)
	}
	again := h.must(201, "POST", "/admin/v1/organizations", tok, map[string]any{"name": "acme"}, "Idempotency-Key", idem)
	var org2 orgJSON
	again.json(t, &org2)
	if org2.ID != org.ID || again.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("retried create: %s (replayed %q), want organization %s again", again.body, again.header.Get("Idempotent-Replayed"), org.ID)
	}
	r = h.must(409, "POST", "/admin/v1/organizations", tok, map[string]any{"name": "other"}, "Idempotency-Key", idem)
	if code, _, _ := r.errorParts(t); code != "idempotency_key_reused" {
		t.Errorf("same key, another body: %s", r.body)
	}

	h.must(200, "GET", "/admin/v1/organizations/"+org.ID, tok, nil)
	r = h.must(200, "PATCH", "/admin/v1/organizations/"+org.ID, tok, map[string]any{"capture_mode": "metadata", "retention": "30d"})
	r.json(t, &org2)
	if org2.CaptureMode != "metadata" {
		t.Errorf("patched: %s", r.body)
	}

	// Keyset paging walks every organization once.
	seen := map[string]int{}
	path := "/admin/v1/organizations?limit=2"
	for pages := 0; ; pages++ {
		var page struct {
			Data       []orgJSON `json:"data"`
			HasMore    bool      `json:"has_more"`
			NextCursor *string   `json:"next_cursor"`
		}
		h.must(200, "GET", path, tok, nil).json(t, &page)
		for _, o := range page.Data {
			seen[o.ID]++
		}
		if !page.HasMore {
			break
		}
		if pages > 10000 {
			t.Fatal("paging does not end")
		}
		path = "/admin/v1/organizations?limit=2&after=" + url.QueryEscape(*page.NextCursor)
	}
	if seen[org.ID] != 1 {
		t.Errorf("paging saw the new organization %d times", seen[org.ID])
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("paging saw %s %d times", id, n)
		}
	}

	// Keys: the secret once, never again.
	var ck struct {
		ID, Key, DisplayPrefix string
		RateLimitPerMinute     int `json:"rate_limit_per_minute"`
	}
	r = h.must(201, "POST", "/admin/v1/organizations/"+org.ID+"/keys", tok, map[string]any{"name": "ci", "rate_limit_per_minute": 60})
	r.json(t, &ck)
	if !strings.HasPrefix(ck.Key, "sk_") || ck.RateLimitPerMinute != 60 {
		t.Fatalf("created key %s", r.body)
	}
	list := h.must(200, "GET", "/admin/v1/organizations/"+org.ID+"/keys", tok, nil)
	if strings.Contains(string(list.body), ck.Key) || !strings.Contains(string(list.body), ck.ID) {
		t.Errorf("key list %s: want the key's id, never the key", list.body)
	}
	h.must(200, "PATCH", "/admin/v1/keys/"+ck.ID, tok, map[string]any{"rate_limit_per_minute": 120})
	var rot struct {
		ID, Key, Replaces string
	}
	h.must(201, "POST", "/admin/v1/keys/"+ck.ID+"/rotate", tok, map[string]any{"overlap_seconds": 60}).json(t, &rot)
	if rot.Replaces != ck.ID || rot.Key == "" || rot.Key == ck.Key {
		t.Errorf("rotation %+v", rot)
	}
	h.must(200, "POST", "/admin/v1/keys/"+rot.ID+"/revoke", tok, nil)
	if len(h.notify.revoked) != 1 || h.notify.revoked[0] != sha256.Sum256([]byte(rot.Key)) {
		t.Errorf("revocation told the gateways %d hashes, want the rotated key's", len(h.notify.revoked))
	}
	if len(h.notify.changed) != 2 {
		t.Errorf("limit change and rotation told the gateways %d times, want 2", len(h.notify.changed))
	}

	for _, p := range []string{"/usage", "/usage/series?by=status", "/prompts?limit=5"} {
		h.must(200, "GET", "/admin/v1/organizations/"+org.ID+p, tok, nil)
	}
	h.must(200, "GET", "/admin/v1/usage", tok, nil)

	r = h.must(200, "DELETE", "/admin/v1/organizations/"+org.ID, tok, nil)
	if !strings.Contains(string(r.body), `"keys":2`) || len(h.notify.orgsGone) != 1 {
		t.Errorf("delete: %s, gateways told of %d organizations", r.body, len(h.notify.orgsGone))
	}
	h.must(404, "GET", "/admin/v1/organizations/"+org.ID, tok, nil)

	var actors []string
	rows, _ := storetest.OwnerPool(t).Query(ctx, `SELECT DISTINCT actor FROM audit_log WHERE organization_id = $1`, uuid.MustParse(org.ID))
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			t.Fatal(err)
		}
		actors = append(actors, a)
	}
	if len(actors) != 1 || actors[0] != "token:"+tokID.String() {
		t.Errorf("audit actors %v, want only token:%s", actors, tokID)
	}
}

// Bad credentials and scopes: 401 for anything not a live credential, 403
// for a read token that would change something or a tenant administrator
// at an operator's endpoint.
func TestAuthentication(t *testing.T) {
	h := newHarness(t)
	write, _ := h.operator(store.ScopeWrite, nil)
	read, _ := h.operator(store.ScopeRead, nil)
	past := time.Now().Add(-time.Minute)
	expired, _ := h.operator(store.ScopeWrite, &past)
	revoked, revokedID := h.operator(store.ScopeWrite, nil)
	if _, err := h.admin.RevokeAdminToken(context.Background(), revokedID); err != nil {
		t.Fatal(err)
	}
	org, err := h.admin.CreateOrg(context.Background(), "auth")
	if err != nil {
		t.Fatal(err)
	}
	unknown, _ := NewOperatorToken()
	for name, tok := range map[string]string{
		"none": "", "unknown": unknown, "expired": expired, "revoked": revoked, "garbage": "nonsense",
		"jwt without role":     tenantJWT(t, org.ID, "", time.Now().Add(time.Hour)),
		"jwt with member role": tenantJWT(t, org.ID, "member", time.Now().Add(time.Hour)),
		"expired jwt":          tenantJWT(t, org.ID, "admin", time.Now().Add(-time.Hour)),
		"unknown session":      sessionTokenPrefix + random(),
	} {
		r := h.do("GET", "/admin/v1/organizations", tok, nil)
		if code, _, _ := r.errorParts(t); r.status != 401 || code != "invalid_admin_credential" {
			t.Errorf("%s: %d %s, want 401", name, r.status, r.body)
		}
	}
	h.must(200, "GET", "/admin/v1/organizations", read, nil)
	r := h.must(403, "POST", "/admin/v1/organizations", read, map[string]any{"name": "x"})
	if code, _, _ := r.errorParts(t); code != "insufficient_scope" {
		t.Errorf("read token creating: %s", r.body)
	}
	h.must(403, "POST", "/admin/v1/keys/"+uuid.NewString()+"/revoke", read, nil)
	admin := tenantJWT(t, org.ID, "admin", time.Now().Add(time.Hour))
	for _, c := range []struct{ method, path string }{
		{"POST", "/admin/v1/organizations"}, {"PATCH", "/admin/v1/organizations/" + org.ID.String()},
		{"DELETE", "/admin/v1/organizations/" + org.ID.String()}, {"GET", "/admin/v1/usage"},
	} {
		r := h.do(c.method, c.path, admin, map[string]any{"name": "x"})
		if code, _, _ := r.errorParts(t); r.status != 403 || code != "permission_denied" {
			t.Errorf("tenant administrator %s %s: %d %s, want 403", c.method, c.path, r.status, r.body)
		}
	}
	h.must(200, "GET", "/admin/v1/organizations/"+org.ID.String(), write, nil)

	// A console session: login, use, logout; the credential is not echoed.
	var s struct {
		Token     string `json:"token"`
		Principal whoami `json:"principal"`
	}
	lr := h.must(201, "POST", "/admin/v1/session", "", map[string]any{"credential": admin})
	lr.json(t, &s)
	if strings.Contains(string(lr.body), admin) || s.Principal.Kind != "tenant_admin" || *s.Principal.OrganizationID != org.ID.String() {
		t.Errorf("login answered %s", lr.body)
	}
	h.must(200, "GET", "/admin/v1/organizations/"+org.ID.String()+"/keys", s.Token, nil)
	h.must(200, "DELETE", "/admin/v1/session", s.Token, nil)
	h.must(401, "GET", "/admin/v1/me", s.Token, nil)
	h.must(401, "POST", "/admin/v1/session", "", map[string]any{"credential": expired})

	// Revoking an operator's token ends its console sessions.
	tok2, id2 := h.operator(store.ScopeRead, nil)
	h.must(201, "POST", "/admin/v1/session", "", map[string]any{"credential": tok2}).json(t, &s)
	h.must(200, "GET", "/admin/v1/me", s.Token, nil)
	if _, err := h.admin.RevokeAdminToken(context.Background(), id2); err != nil {
		t.Fatal(err)
	}
	h.must(401, "GET", "/admin/v1/me", s.Token, nil)
}

// Session expiry: a session ends at its TTL, and never outlives the JWT
// it was opened with.
func TestSessionExpiry(t *testing.T) {
	now := time.Now()
	ss := newSessions(time.Minute, func() time.Time { return now })
	ctx := context.Background()
	tok, exp, err := ss.create(ctx, principal{actor: "jwt:x"}, now.Add(10*time.Second))
	if err != nil || !exp.Equal(now.Add(10*time.Second)) {
		t.Fatalf("session until %v, want the JWT's expiry", exp)
	}
	if _, _, ok, _ := ss.get(ctx, tok); !ok {
		t.Fatal("a fresh session is not open")
	}
	now = now.Add(10 * time.Second)
	if _, _, ok, _ := ss.get(ctx, tok); ok {
		t.Error("the session outlived its JWT")
	}
	tok, _, _ = ss.create(ctx, principal{actor: "token:y", operator: true}, time.Time{})
	now = now.Add(time.Minute)
	if _, _, ok, _ := ss.get(ctx, tok); ok {
		t.Error("the session outlived its TTL")
	}
}

// A tenant administrator of B reaches nothing of A's by any endpoint: each
// answer equals the answer for an id that exists nowhere, and A's data is
// unchanged.
func TestTenantAdminCannotReachAnotherOrganization(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	a, _ := h.admin.CreateOrg(ctx, "tenant a")
	b, _ := h.admin.CreateOrg(ctx, "tenant b")
	write, _ := h.operator(store.ScopeWrite, nil)
	var ka struct{ ID, Key string }
	h.must(201, "POST", "/admin/v1/organizations/"+a.ID.String()+"/keys", write, map[string]any{"name": "a", "rate_limit_per_minute": 5}).json(t, &ka)
	promptA := seedPrompt(t, a.ID, uuid.MustParse(ka.ID), "A's secret prompt")

	bAdmin := tenantJWT(t, b.ID, "admin", time.Now().Add(time.Hour))
	missingOrg, missingKey := uuid.NewString(), uuid.NewString()
	type probe struct {
		method, path string
		body         any
	}
	probes := func(org, key, prompt string) []probe {
		return []probe{
			{"GET", "/admin/v1/organizations/" + org, nil},
			{"GET", "/admin/v1/organizations/" + org + "/keys", nil},
			{"POST", "/admin/v1/organizations/" + org + "/keys", map[string]any{"name": "intruder", "rate_limit_per_minute": 1}},
			{"GET", "/admin/v1/organizations/" + org + "/usage", nil},
			{"GET", "/admin/v1/organizations/" + org + "/usage/series", nil},
			{"GET", "/admin/v1/organizations/" + org + "/models", nil},
			{"GET", "/admin/v1/organizations/" + org + "/prompts", nil},
			{"GET", "/admin/v1/organizations/" + org + "/prompts/" + prompt, nil},
			{"PATCH", "/admin/v1/keys/" + key, map[string]any{"rate_limit_per_minute": 100000}},
			{"POST", "/admin/v1/keys/" + key + "/rotate", map[string]any{}},
			{"POST", "/admin/v1/keys/" + key + "/revoke", nil},
		}
	}
	theirs, nobody := probes(a.ID.String(), ka.ID, promptA.String()), probes(missingOrg, missingKey, uuid.NewString())
	// B's session too, not only its JWT, and B's organization admin key
	// and its session.
	var s, ks struct{ Token string }
	h.must(201, "POST", "/admin/v1/session", "", map[string]any{"credential": bAdmin}).json(t, &s)
	var bKey struct{ Key string }
	h.must(201, "POST", "/admin/v1/organizations/"+b.ID.String()+"/admin-keys", write, map[string]any{"name": "b's backend"}).json(t, &bKey)
	h.must(201, "POST", "/admin/v1/session", "", map[string]any{"credential": bKey.Key}).json(t, &ks)
	for _, cred := range []string{bAdmin, s.Token, bKey.Key, ks.Token} {
		for i := range theirs {
			got, want := h.do(theirs[i].method, theirs[i].path, cred, theirs[i].body), h.do(nobody[i].method, nobody[i].path, cred, nobody[i].body)
			gc, gp, gm := got.errorParts(t)
			wc, wp, wm := want.errorParts(t)
			if got.status != 404 || got.status != want.status || gc != wc || gp != wp || gm != wm {
				t.Errorf("B %s %s: %d %s; for a missing id: %d %s", theirs[i].method, theirs[i].path, got.status, got.body, want.status, want.body)
			}
			if strings.Contains(string(got.body), "secret prompt") {
				t.Errorf("B %s %s saw A's prompt", theirs[i].method, theirs[i].path)
			}
		}
	}
	var orgs struct{ Data []orgJSON }
	h.must(200, "GET", "/admin/v1/organizations", bAdmin, nil).json(t, &orgs)
	if len(orgs.Data) != 1 || orgs.Data[0].ID != b.ID.String() {
		t.Errorf("B's organization list: %+v, want only B", orgs.Data)
	}
	keys, err := h.admin.Keys(ctx, a.ID)
	if err != nil || len(keys) != 1 || keys[0].RevokedAt != nil || keys[0].ExpiresAt != nil || keys[0].RateLimitPerMinute != 5 {
		t.Errorf("A's keys after B's attempts: %+v, %v", keys, err)
	}
	if len(h.notify.revoked)+len(h.notify.changed) != 0 {
		t.Error("B's attempts told the gateways of a change")
	}

	// B manages its own keys and reads its own log.
	var kb struct{ ID, Key string }
	h.must(201, "POST", "/admin/v1/organizations/"+b.ID.String()+"/keys", bAdmin, map[string]any{"name": "b", "rate_limit_per_minute": 5}).json(t, &kb)
	h.must(200, "POST", "/admin/v1/keys/"+kb.ID+"/revoke", bAdmin, nil)
	var actor string
	if err := storetest.OwnerPool(t).QueryRow(ctx, `SELECT actor FROM audit_log WHERE organization_id = $1 AND action = 'key.revoke'`, b.ID).Scan(&actor); err != nil || actor != "jwt:admin@"+b.ID.String()[:8] {
		t.Errorf("B's revocation audited as %q (%v), want its JWT subject", actor, err)
	}
}

// seedPrompt writes one request-log row for org (owner role) and returns
// its id.
func seedPrompt(t *testing.T, org, key uuid.UUID, prompt string) uuid.UUID {
	t.Helper()
	var id uuid.UUID
	err := storetest.OwnerPool(t).QueryRow(context.Background(), `INSERT INTO prompts (organization_id, id, request_id, api_key_id, endpoint, model,
		prompt_text, response, prompt_tokens, completion_tokens, usage_tokens, status, latency_ms, created_at)
		SELECT $1, prompts_row_id(now(), gen_random_uuid()), 'seed-' || gen_random_uuid(), $2, '/v1/chat/completions', 'gpt-4o-mini',
		$3, 'an answer', 3, 4, 7, 200, 12, now() RETURNING id`, org, key, prompt).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// Bodies that are not what an endpoint takes: 400 or 413 naming the
// problem, 415 for another media type, and nothing written.
func TestBadBodies(t *testing.T) {
	h := newHarness(t)
	tok, _ := h.operator(store.ScopeWrite, nil)
	org, _ := h.admin.CreateOrg(context.Background(), "bodies")
	keysPath := "/admin/v1/organizations/" + org.ID.String() + "/keys"
	cases := []struct {
		name, path, body string
		status           int
		param, says      string
	}{
		{"malformed", "/admin/v1/organizations", `{"name": "x",`, 400, "", "Malformed JSON"},
		{"not an object", "/admin/v1/organizations", `["x"]`, 400, "", "JSON object"},
		{"unknown field", "/admin/v1/organizations", `{"name": "x", "organization_id": "y"}`, 400, "organization_id", "Unknown field 'organization_id'"},
		{"wrong type", keysPath, `{"name": "k", "rate_limit_per_minute": "many"}`, 400, "rate_limit_per_minute", "must be an integer"},
		{"trailing", "/admin/v1/organizations", `{"name": "x"} {"name": "y"}`, 400, "", "follows the object"},
		{"missing name", "/admin/v1/organizations", `{}`, 400, "name", "required"},
		{"bad capture", "/admin/v1/organizations", `{"name": "x", "capture_mode": "all"}`, 400, "capture_mode", "full or metadata"},
		{"bad placement", "/admin/v1/organizations", `{"name": "x", "placement": "database:Bad"}`, 400, "placement", "shared, schema or database:NAME"},
		{"unknown target", "/admin/v1/organizations", `{"name": "x", "placement": "database:nope"}`, 400, "placement", "does not name"},
		{"no rpm", keysPath, `{"name": "k"}`, 400, "rate_limit_per_minute", "required"},
		{"negative tpm", keysPath, `{"name": "k", "rate_limit_per_minute": 1, "tokens_per_minute": -1}`, 400, "tokens_per_minute", "from 0"},
		{"oversized", "/admin/v1/organizations", `{"name": "` + strings.Repeat("x", 70000) + `"}`, 413, "", "exceeds the limit"},
	}
	for _, c := range cases {
		r := h.do("POST", c.path, tok, c.body)
		if r.status != c.status {
			t.Errorf("%s: %d %s, want %d", c.name, r.status, r.body, c.status)
			continue
		}
		_, param, msg := r.errorParts(t)
		if param != c.param || !strings.Contains(msg, c.says) {
			t.Errorf("%s: param %q, message %q; want %q saying %q", c.name, param, msg, c.param, c.says)
		}
	}
	req := h.do("POST", "/admin/v1/organizations", tok, []byte(`{"name":"x"}`), "Content-Type", "text/plain")
	if req.status != 415 {
		t.Errorf("text/plain body: %d %s, want 415", req.status, req.body)
	}
	var n int
	if err := storetest.OwnerPool(t).QueryRow(context.Background(), `SELECT count(*) FROM organizations WHERE name IN ('x', 'y')`).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d organizations written by refused requests (%v)", n, err)
	}
	keys, _ := h.admin.Keys(context.Background(), org.ID)
	if len(keys) != 0 {
		t.Errorf("%d keys written by refused requests", len(keys))
	}
	h.must(405, "PUT", "/admin/v1/organizations", tok, nil)
	h.must(404, "GET", "/admin/v1/nothing", tok, nil)
	h.must(404, "GET", "/admin/v1/organizations/not-a-uuid", tok, nil)
}
