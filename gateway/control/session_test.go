package control

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// Console sessions in Redis: a session opened on one control server works
// on another (a replica, or the process after a restart), a logout on
// either ends it on both, and revoking the operator's token ends its
// sessions everywhere. Nothing of the credential is in Redis.
func TestSessionsAcrossReplicas(t *testing.T) {
	rdb := storetest.Redis(t)
	with := func(o *Options) { o.Sessions = rdb }
	one, two := newHarness(t, with), newHarness(t, with)
	ctx := context.Background()
	b, _ := one.admin.CreateOrg(ctx, "sessions b")
	tok, tokID := one.operator(store.ScopeWrite, nil)
	bAdmin := tenantJWT(t, b.ID, "admin", time.Now().Add(time.Hour))

	login := func(h *harness, cred string) string {
		t.Helper()
		var s struct{ Token string }
		h.must(201, "POST", "/admin/v1/session", "", map[string]any{"credential": cred}).json(t, &s)
		return s.Token
	}
	op, tenant := login(one, tok), login(two, bAdmin)
	var me whoami
	two.must(200, "GET", "/admin/v1/me", op, nil).json(t, &me)
	if me.Actor != "token:"+tokID.String() || me.ExpiresAt == nil {
		t.Errorf("the operator's session on the other replica: %+v", me)
	}
	one.must(200, "GET", "/admin/v1/organizations/"+b.ID.String(), tenant, nil)
	if r := one.do("GET", "/admin/v1/usage", tenant, nil); r.status != 403 {
		t.Errorf("B's session reaching operators' usage on the other replica: %d %s", r.status, r.body)
	}

	// A third server: the gateway restarted.
	three := newHarness(t, with)
	three.must(200, "GET", "/admin/v1/me", tenant, nil)

	// Logout on one replica ends the session on all.
	one.must(200, "DELETE", "/admin/v1/session", tenant, nil)
	for _, h := range []*harness{one, two, three} {
		if r := h.do("GET", "/admin/v1/me", tenant, nil); r.status != 401 {
			t.Errorf("B's session after logout: %d %s, want 401", r.status, r.body)
		}
	}
	keys, err := rdb.Keys(ctx, sessionKey(tenant)).Result()
	if err != nil || len(keys) != 0 {
		t.Errorf("the ended session is still in Redis: %v %v", keys, err)
	}

	// The session's value names the token by its hash only.
	v, err := rdb.Get(ctx, sessionKey(op)).Result()
	if err != nil || len(v) == 0 || containsAny(v, tok, op) {
		t.Errorf("the session's value in Redis: %q, %v", v, err)
	}
	if ttl := rdb.TTL(ctx, sessionKey(op)).Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("the session key's TTL %s, want at most the session's minute", ttl)
	}
	if _, err := one.admin.RevokeAdminToken(ctx, tokID); err != nil {
		t.Fatal(err)
	}
	for _, h := range []*harness{two, one} {
		if r := h.do("GET", "/admin/v1/me", op, nil); r.status != 401 {
			t.Errorf("the revoked operator's session: %d %s, want 401", r.status, r.body)
		}
	}
}

func containsAny(s string, subs ...string) bool {
	for _, x := range subs {
		if x != "" && strings.Contains(strings.ToLower(s), strings.ToLower(x)) {
			return true
		}
	}
	return false
}

// With the session store unreachable, a login and a session answer 503 in
// the OpenAI error shape, saying nothing of Redis; the credential itself
// still works as a bearer.
func TestSessionsStoreDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	rdb := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	h := newHarness(t, func(o *Options) { o.Sessions = rdb })
	tok, _ := h.operator(store.ScopeRead, nil)
	for _, r := range []reply{
		h.do("POST", "/admin/v1/session", "", map[string]any{"credential": tok}),
		h.do("GET", "/admin/v1/me", sessionTokenPrefix+random(), nil),
	} {
		code, _, msg := r.errorParts(t)
		if r.status != 503 || code != "sessions_unavailable" || containsAny(msg, addr, "redis", "dial") {
			t.Errorf("with the session store down: %d %s", r.status, r.body)
		}
	}
	h.must(200, "GET", "/admin/v1/me", tok, nil)
}
