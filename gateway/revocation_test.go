package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// Two gateway instances share Redis and PostgreSQL; a key revoked through
// the admin path stops working on both within a second.
func TestRevocationAcrossGatewayInstances(t *testing.T) {
	one := newHarness(t, nil)
	two := newHarness(t, nil)
	_, key, k := one.tenant(1000)
	for i, h := range []*harness{one, two} {
		if r := h.do("POST", "/v1/chat/completions", chatBody, bearer(key)...); r.status != 200 {
			t.Fatalf("instance %d before revocation: %d %s", i+1, r.status, r.body)
		}
	}
	ctx := context.Background()
	if _, err := one.admin.RevokeKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if err := auth.Revoke(ctx, storetest.Redis(t), time.Hour, k.Hash); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i, h := range []*harness{one, two} {
		for {
			r := h.do("POST", "/v1/chat/completions", chatBody, bearer(key)...)
			if r.status == 401 {
				t.Logf("instance %d rejects the revoked key %s after revocation", i+1, time.Since(start))
				break
			}
			if time.Since(start) > time.Second {
				t.Fatalf("instance %d still answers %d a second after revocation", i+1, r.status)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// A JWT for one tenant next to another tenant's key never mixes the two.
func TestJWTNextToAKeyNeverMixes(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef-gw-test"
	h := newHarness(t, func(c *config.Config) { c.JWTHS256Secret = secret })
	orgA, keyA, _ := h.tenant(1000)
	orgB, _, _ := h.tenant(1000)
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"organization_id": orgB.String(), "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	r := h.do("POST", "/v1/chat/completions", chatBody, "Authorization", "Bearer "+tok)
	if r.status != 200 {
		t.Fatalf("JWT alone: %d %s", r.status, r.body)
	}
	if rec := h.rec.find(t, r.headers["x-request-id"]); rec.OrgID != orgB {
		t.Errorf("JWT request recorded for %s, want %s", rec.OrgID, orgB)
	}
	for _, hdr := range []string{"X-Api-Key", "Api-Key"} {
		r := h.do("POST", "/v1/chat/completions", chatBody, "Authorization", "Bearer "+tok, hdr, keyA)
		if r.status != 401 {
			rec := h.rec.find(t, r.headers["x-request-id"])
			t.Errorf("JWT for B with A's key in %s: status %d, acted for %s (A is %s)", hdr, r.status, rec.OrgID, orgA)
		}
	}
}
