package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/gateway/auth"
)

var hsSecret = []byte("0123456789abcdef0123456789abcdef-test-only")

func pemOf(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func sign(t *testing.T, m jwt.SigningMethod, key any, c jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestJWT(t *testing.T) {
	f := newFixture(t)
	org := f.org(t)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsaPEM := pemOf(t, &rsaKey.PublicKey)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)

	rsaVerifier, err := auth.NewJWTVerifier(auth.JWTConfig{PublicKeyPEM: rsaPEM, HS256Secret: hsSecret, Issuer: "https://idp.example", Audience: "bulkhead"})
	if err != nil {
		t.Fatal(err)
	}
	ecVerifier, err := auth.NewJWTVerifier(auth.JWTConfig{PublicKeyPEM: pemOf(t, &ecKey.PublicKey)})
	if err != nil {
		t.Fatal(err)
	}
	a := f.instance(t, false, func(o *auth.Options) { o.JWT = rsaVerifier })
	aEC := f.instance(t, false, func(o *auth.Options) { o.JWT = ecVerifier })

	now := time.Now()
	good := func() jwt.MapClaims {
		return jwt.MapClaims{"organization_id": org.String(), "sub": "user-1", "iss": "https://idp.example",
			"aud": "bulkhead", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
	}
	with := func(k string, v any) jwt.MapClaims {
		c := good()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	noneToken, _ := jwt.NewWithClaims(jwt.SigningMethodNone, good()).SignedString(jwt.UnsafeAllowNoneSignatureType)
	rs := sign(t, jwt.SigningMethodRS256, rsaKey, good())

	accept := map[string]string{
		"RS256":              rs,
		"HS256":              sign(t, jwt.SigningMethodHS256, hsSecret, good()),
		"upper-case org id":  sign(t, jwt.SigningMethodRS256, rsaKey, with("organization_id", strings.ToUpper(org.String()))),
		"exp within leeway?": sign(t, jwt.SigningMethodRS256, rsaKey, with("exp", now.Add(time.Minute).Unix())),
	}
	for name, tok := range accept {
		p, err := a.Authenticate(context.Background(), []byte(tok), netip.Addr{})
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if p.Org != org || p.Kind != auth.KindJWT || p.KeyID != uuid.Nil {
			t.Errorf("%s: principal %+v", name, p)
		}
	}
	if _, err := aEC.Authenticate(context.Background(), []byte(sign(t, jwt.SigningMethodES256, ecKey,
		jwt.MapClaims{"organization_id": org.String(), "exp": now.Add(time.Hour).Unix()})), netip.Addr{}); err != nil {
		t.Errorf("ES256: %v", err)
	}

	parts := strings.Split(rs, ".")
	reject := map[string]string{
		"alg none":             noneToken,
		"empty signature":      parts[0] + "." + parts[1] + ".",
		"HS256 keyed with PEM": sign(t, jwt.SigningMethodHS256, rsaPEM, good()),
		"ES256 on RSA config":  sign(t, jwt.SigningMethodES256, ecKey, good()),
		"no exp":               sign(t, jwt.SigningMethodRS256, rsaKey, with("exp", nil)),
		"expired":              sign(t, jwt.SigningMethodRS256, rsaKey, with("exp", now.Add(-time.Hour).Unix())),
		"nbf in the future":    sign(t, jwt.SigningMethodRS256, rsaKey, with("nbf", now.Add(time.Hour).Unix())),
		"wrong issuer":         sign(t, jwt.SigningMethodRS256, rsaKey, with("iss", "https://evil.example")),
		"no audience":          sign(t, jwt.SigningMethodRS256, rsaKey, with("aud", nil)),
		"wrong audience":       sign(t, jwt.SigningMethodRS256, rsaKey, with("aud", "other")),
		"org as number":        sign(t, jwt.SigningMethodRS256, rsaKey, with("organization_id", 42)),
		"org as array":         sign(t, jwt.SigningMethodRS256, rsaKey, with("organization_id", []string{org.String()})),
		"org as object":        sign(t, jwt.SigningMethodRS256, rsaKey, with("organization_id", map[string]string{"id": org.String()})),
		"org empty":            sign(t, jwt.SigningMethodRS256, rsaKey, with("organization_id", "")),
		"org not a uuid":       sign(t, jwt.SigningMethodRS256, rsaKey, with("organization_id", "acme")),
		"org as urn":           sign(t, jwt.SigningMethodRS256, rsaKey, with("organization_id", "urn:uuid:"+org.String())),
		"org missing":          sign(t, jwt.SigningMethodRS256, rsaKey, with("organization_id", nil)),
		"org unknown":          sign(t, jwt.SigningMethodRS256, rsaKey, with("organization_id", uuid.NewString())),
		"signature tampered":   parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"organization_id":"`+uuid.NewString()+`","exp":9999999999}`)) + "." + parts[2],
		"a megabyte of dots":   "a." + strings.Repeat(".", 1<<20),
		"two dots only":        "..",
	}
	for name, tok := range reject {
		if _, err := a.Authenticate(context.Background(), []byte(tok), netip.Addr{}); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Errorf("%s: err = %v, want ErrUnauthenticated", name, err)
		}
	}
}

func TestJWTVerifierConfig(t *testing.T) {
	for name, c := range map[string]auth.JWTConfig{
		"nothing":      {},
		"short secret": {HS256Secret: []byte("short")},
		"bad pem":      {PublicKeyPEM: []byte("not pem")},
	} {
		if _, err := auth.NewJWTVerifier(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	if _, err := auth.NewJWTVerifier(auth.JWTConfig{PublicKeyPEM: pemOf(t, &small.PublicKey)}); err == nil {
		t.Error("1024-bit RSA key accepted")
	}
}
