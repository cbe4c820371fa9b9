package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"go.uber.org/zap"
)

// JWTConfig says which JWTs are accepted. At least one of HS256Secret and
// PublicKeyPEM must be set.
type JWTConfig struct {
	HS256Secret  []byte        // HS256 shared secret, at least 32 bytes
	PublicKeyPEM []byte        // RSA (RS256) or P-256 (ES256) public key
	Issuer       string        // required iss; empty: any
	Audience     string        // required aud; empty: any
	Leeway       time.Duration // tolerated clock skew
}

// JWTVerifier verifies tokens with pinned algorithms: each configured key
// admits exactly one algorithm, and the key handed to the verifier is
// chosen by that algorithm, so an HS256 token "signed" with the RSA public
// key is refused. exp is required; iss and aud are checked when configured.
// It is safe for concurrent use.
type JWTVerifier struct {
	parser  *jwt.Parser
	hmacKey []byte
	pubKey  any
	pubAlg  string
}

// NewJWTVerifier checks c and builds a verifier.
func NewJWTVerifier(c JWTConfig) (*JWTVerifier, error) {
	v := &JWTVerifier{}
	var methods []string
	if len(c.HS256Secret) > 0 {
		if len(c.HS256Secret) < 32 {
			return nil, errors.New("jwt: the HS256 secret must be at least 32 bytes")
		}
		v.hmacKey = c.HS256Secret
		methods = append(methods, jwt.SigningMethodHS256.Alg())
	}
	if len(c.PublicKeyPEM) > 0 {
		key, alg, err := parsePublicKey(c.PublicKeyPEM)
		if err != nil {
			return nil, err
		}
		v.pubKey, v.pubAlg = key, alg
		methods = append(methods, alg)
	}
	if len(methods) == 0 {
		return nil, errors.New("jwt: no verification key configured")
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(c.Leeway),
	}
	if c.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(c.Issuer))
	}
	if c.Audience != "" {
		opts = append(opts, jwt.WithAudience(c.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

func parsePublicKey(b []byte) (any, string, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, "", errors.New("jwt: the public key file holds no PEM block")
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		if rk, rerr := x509.ParsePKCS1PublicKey(block.Bytes); rerr == nil {
			key, err = rk, nil
		}
	}
	if err != nil {
		return nil, "", fmt.Errorf("jwt: parsing the public key: %w", err)
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, "", errors.New("jwt: RSA keys must have at least 2048 bits")
		}
		return k, jwt.SigningMethodRS256.Alg(), nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, "", errors.New("jwt: only P-256 (ES256) EC keys are supported")
		}
		return k, jwt.SigningMethodES256.Alg(), nil
	}
	return nil, "", fmt.Errorf("jwt: unsupported public key type %T", key)
}

func (v *JWTVerifier) keyFor(t *jwt.Token) (any, error) {
	switch alg := t.Method.Alg(); {
	case alg == jwt.SigningMethodHS256.Alg() && v.hmacKey != nil:
		return v.hmacKey, nil
	case alg == v.pubAlg && v.pubKey != nil:
		return v.pubKey, nil
	}
	return nil, errors.New("unexpected signing method")
}

// claims are the registered claims plus the tenant.
type claims struct {
	jwt.RegisteredClaims
	OrganizationID any `json:"organization_id"`
	Role           any `json:"role"` // "admin": a tenant administrator (VerifyAdmin)
	// UserID is the design's end user beside the tenant: a string (or a
	// whole number, as some identity providers issue), at most
	// MaxEndUserBytes; it goes on every row of the request log.
	UserID any `json:"user_id"`
}

// MaxEndUserBytes bounds an end user, from the JWT's user_id claim or the
// body's "user" (openai.MaxUserBytes, the same bound).
const MaxEndUserBytes = 256

// endUser reads the user_id claim: "" when absent or null; an error for
// any other type, an empty or over-long string, or control characters,
// which refuse the token (an end user is recorded, so it must be sane).
func endUser(v any) (string, error) {
	var s string
	switch u := v.(type) {
	case nil:
		return "", nil
	case string:
		s = u
	case float64: // encoding/json's number
		if u != math.Trunc(u) || math.Abs(u) > 1<<53 {
			return "", errors.New("user_id is not a whole number")
		}
		s = strconv.FormatInt(int64(u), 10)
	default:
		return "", errors.New("user_id is not a string")
	}
	if s == "" || len(s) > MaxEndUserBytes || !utf8.ValidString(s) || strings.ContainsFunc(s, unicode.IsControl) {
		return "", errors.New("user_id is empty, longer than 256 bytes or has control characters")
	}
	return s, nil
}

// ErrNotAdmin: a valid token whose role claim is not "admin".
var ErrNotAdmin = errors.New("the token's role is not admin")

// TenantAdmin is what VerifyAdmin found in a tenant administrator's token.
type TenantAdmin struct {
	Org       uuid.UUID
	Subject   string
	ExpiresAt time.Time
}

// VerifyAdmin checks token as Verify does and also requires the role
// claim "admin": the control plane's tenant administrators. Its subject
// (sub) must be set, since the audit log names it.
func (v *JWTVerifier) VerifyAdmin(token string) (TenantAdmin, error) {
	var c claims
	org, subject, err := v.verify(token, &c)
	if err != nil {
		return TenantAdmin{}, err
	}
	if role, ok := c.Role.(string); !ok || role != "admin" {
		return TenantAdmin{}, ErrNotAdmin
	}
	if subject == "" {
		return TenantAdmin{}, errors.New("the token has no subject")
	}
	return TenantAdmin{Org: org, Subject: subject, ExpiresAt: c.ExpiresAt.Time}, nil // exp is required
}

// Verify checks token and returns its organization and subject.
func (v *JWTVerifier) Verify(token string) (org uuid.UUID, subject string, err error) {
	return v.verify(token, new(claims))
}

func (v *JWTVerifier) verify(token string, c *claims) (org uuid.UUID, subject string, err error) {
	if _, err := v.parser.ParseWithClaims(token, c, v.keyFor); err != nil {
		return uuid.Nil, "", err
	}
	s, ok := c.OrganizationID.(string)
	if !ok || len(s) != 36 { // canonical 8-4-4-4-12 only: no URN, braces or raw hex
		return uuid.Nil, "", errors.New("organization_id is not a UUID string")
	}
	org, err = uuid.Parse(s)
	if err != nil || org == uuid.Nil {
		return uuid.Nil, "", errors.New("organization_id is not a UUID string")
	}
	return org, c.Subject, nil
}

func (a *Authenticator) authenticateJWT(ctx context.Context, cred []byte) (*Principal, error) {
	var c claims
	org, sub, err := a.opts.JWT.verify(string(cred), &c)
	var user string
	if err == nil {
		user, err = endUser(c.UserID)
	}
	if err != nil {
		a.n.malformed.Add(1)
		a.log.Debug("jwt rejected", zap.Error(err))
		return nil, ErrUnauthenticated
	}
	exists, ok := a.orgs.GetIfPresent(org)
	if !ok {
		a.n.l3Lookups.Add(1)
		lctx, cancel := context.WithTimeout(ctx, a.opts.LookupTimeout)
		exists, err = a.opts.Store.OrgExists(lctx, org)
		cancel()
		if err != nil {
			a.n.l3Errors.Add(1)
			a.log.Warn("organization look-up failed", zap.Error(err))
			return nil, ErrUnavailable
		}
		a.orgs.Set(org, exists)
	} else {
		a.n.l1Hits.Add(1)
	}
	if !exists {
		return nil, ErrUnauthenticated
	}
	return &Principal{Org: org, Kind: KindJWT, Subject: sub, EndUser: user, LimitKey: "org:" + org.String(), OrgText: org.String(),
		RateLimitPerMinute: a.opts.JWTRateLimitPerMinute, TokensPerMinute: a.opts.JWTTokensPerMinute}, nil
}
