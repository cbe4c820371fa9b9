package control

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/store"
)

// principal is who a request acts for.
type principal struct {
	actor    string    // names it in the audit log: "token:<id>" or "jwt:<subject>"
	operator bool      // an operator (any organization); else a tenant administrator of org
	write    bool      // may change things (operators with the write scope; tenant administrators, their keys)
	org      uuid.UUID // a tenant administrator's organization
	session  bool      // came through a console session
	orgKey   bool      // a tenant administrator holding an organization admin key

	tokenHash [32]byte // an operator's token or an admin key, re-checked at every session use
}

// bearer returns the request's one Bearer credential ("" if none).
func bearer(rc *fasthttp.RequestCtx) string {
	var vals [][]byte
	for k, v := range rc.Request.Header.All() {
		if bytes.EqualFold(k, []byte("Authorization")) {
			vals = append(vals, v)
		}
	}
	if len(vals) != 1 {
		return ""
	}
	scheme, cred, ok := strings.Cut(string(vals[0]), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || cred == "" || len(cred) > 8192 {
		return ""
	}
	return cred
}

// authenticate resolves the request's credential: a console session, an
// operator token or a tenant administrator's JWT. Every failure is the
// same 401.
func (s *Server) authenticate(ctx context.Context, rc *fasthttp.RequestCtx) (principal, error) {
	cred := bearer(rc)
	var p principal
	err := s.guard(ctx, rc, cred, func() (err error) {
		p, err = s.resolve(ctx, cred)
		return err
	})
	return p, err
}

// resolve is authenticate's look-up of cred.
func (s *Server) resolve(ctx context.Context, cred string) (principal, error) {
	if strings.HasPrefix(cred, sessionTokenPrefix) {
		p, _, ok, err := s.sessions.get(ctx, cred)
		if err != nil || !ok {
			return principal{}, cmp.Or(err, error(errUnauthenticated))
		}
		// Revoking the token or admin key ends its sessions at their next use.
		switch {
		case p.operator:
			_, err = s.operatorToken(ctx, p.tokenHash)
		case p.orgKey:
			var k store.OrgAdminKey
			k, err = s.opts.Store.OrgAdminKeyByHash(ctx, p.org, p.tokenHash)
			if errors.Is(err, store.ErrNotFound) || err == nil && !k.Usable(time.Now()) {
				err = errUnauthenticated
			}
		}
		if err != nil {
			if errors.Is(err, errUnauthenticated) {
				if eerr := s.sessions.end(ctx, cred); eerr != nil {
					s.log.Warn("ending the session of a revoked credential", zap.Error(eerr))
				}
			}
			return principal{}, err
		}
		return p, nil
	}
	p, _, err := s.verifyCredential(ctx, cred)
	return p, err
}

// verifyCredential checks an operator token or a tenant administrator's
// JWT; notAfter is the JWT's expiry (zero for tokens without one).
func (s *Server) verifyCredential(ctx context.Context, cred string) (principal, time.Time, error) {
	switch {
	case IsOperatorToken(cred):
		h := sha256.Sum256([]byte(cred))
		t, err := s.operatorToken(ctx, h)
		if err != nil {
			return principal{}, time.Time{}, err
		}
		var notAfter time.Time
		if t.ExpiresAt != nil {
			notAfter = *t.ExpiresAt
		}
		return principal{actor: "token:" + t.ID.String(), operator: true, write: t.Scope == store.ScopeWrite, tokenHash: h}, notAfter, nil
	case strings.HasPrefix(cred, orgAdminKeyPrefix):
		k, h, err := s.orgAdminKey(ctx, cred)
		if err != nil {
			return principal{}, time.Time{}, err
		}
		var notAfter time.Time
		if k.ExpiresAt != nil {
			notAfter = *k.ExpiresAt
		}
		return principal{actor: "adminkey:" + k.ID.String(), write: true, org: k.OrgID, tokenHash: h, orgKey: true}, notAfter, nil
	case s.opts.JWT != nil && strings.Count(cred, ".") == 2:
		ta, err := s.opts.JWT.VerifyAdmin(cred)
		if err != nil {
			s.log.Debug("tenant administrator's JWT refused", zap.Error(err))
			return principal{}, time.Time{}, errUnauthenticated
		}
		return principal{actor: "jwt:" + ta.Subject, write: true, org: ta.Org}, ta.ExpiresAt, nil
	}
	return principal{}, time.Time{}, errUnauthenticated
}

// orgAdminKey finds a usable organization admin key, looked up as the app
// role inside the tenant context of the organization it names.
func (s *Server) orgAdminKey(ctx context.Context, cred string) (store.OrgAdminKey, [32]byte, error) {
	org, ok := orgAdminKeyOrg(cred)
	if !ok {
		return store.OrgAdminKey{}, [32]byte{}, errUnauthenticated
	}
	h := sha256.Sum256([]byte(cred))
	k, err := s.opts.Store.OrgAdminKeyByHash(ctx, org, h)
	if errors.Is(err, store.ErrNotFound) || err == nil && (!k.Usable(time.Now()) || k.OrgID != org) {
		return store.OrgAdminKey{}, h, errUnauthenticated
	}
	return k, h, err
}

// operatorToken finds a usable operator token by hash.
func (s *Server) operatorToken(ctx context.Context, h [32]byte) (store.AdminToken, error) {
	t, err := s.opts.Admin.AdminTokenByHash(ctx, h)
	if errors.Is(err, store.ErrNotFound) || err == nil && !t.Usable(time.Now()) {
		return store.AdminToken{}, errUnauthenticated
	}
	return t, err
}

// access is what a route requires of its caller.
type access int

const (
	public        access = iota // no credential (the console's login)
	anyone                      // any principal
	operatorRead                // operators, either scope
	operatorWrite               // operators with the write scope
	tenantRead                  // operators, or a tenant administrator (inside its organization)
	tenantWrite                 // operators with the write scope, or a tenant administrator
)

func (a access) allows(p principal) error {
	switch a {
	case public, anyone:
		return nil
	case operatorRead:
		if !p.operator {
			return errOperatorsOnly
		}
	case operatorWrite:
		if !p.operator {
			return errOperatorsOnly
		}
		if !p.write {
			return errReadOnly
		}
	case tenantRead:
	case tenantWrite:
		if !p.write {
			return errReadOnly
		}
	}
	return nil
}

// keyActions are the actions on organizations' keys that both kinds of
// caller have: *store.Admin runs them as the owner for operators,
// *store.TenantAdmin as the app role inside the tenant administrator's
// own organization's context, with the same statements.
type keyActions interface {
	Org(ctx context.Context, id uuid.UUID) (store.Organization, error)
	OrgsPage(ctx context.Context, after *store.Cursor, limit int) ([]store.Organization, error)
	Keys(ctx context.Context, org uuid.UUID) ([]store.Key, error)
	CreateKeyOnce(ctx context.Context, nk store.NewKey, idem store.Idempotency) (store.Key, bool, error)
	KeyOrg(ctx context.Context, id uuid.UUID) (uuid.UUID, error)
	RevokeKey(ctx context.Context, id uuid.UUID) (store.Key, error)
	RotateKey(ctx context.Context, id uuid.UUID, overlap time.Duration, nk store.NewKey) (old, created store.Key, err error)
	UpdateKeyLimits(ctx context.Context, id uuid.UUID, rpm, tpm *int) (store.Key, error)
}

var (
	_ keyActions = (*store.Admin)(nil)
	_ keyActions = (*store.TenantAdmin)(nil)
)

// actions returns p's key actions: an operator's across organizations, a
// tenant administrator's confined by RLS to its own.
func (s *Server) actions(p principal) keyActions {
	if p.operator {
		return s.opts.Admin.As(p.actor)
	}
	return s.opts.Store.TenantAdmin(p.org, p.actor)
}
