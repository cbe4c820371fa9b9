package control

import (
	"time"
)

type sessionRequest struct {
	Credential string `json:"credential"` // an operator token or a tenant administrator's JWT
}

// whoami describes a principal to the console.
type whoami struct {
	Kind           string     `json:"kind"` // "operator" or "tenant_admin"
	Actor          string     `json:"actor"`
	Scope          string     `json:"scope"` // read or write
	OrganizationID *string    `json:"organization_id,omitempty"`
	ExpiresAt      *time.Time `json:"expires_at,omitempty"` // of the session
}

type sessionResponse struct {
	Token     string    `json:"token"` // send as Authorization: Bearer; shown once
	ExpiresAt time.Time `json:"expires_at"`
	Principal whoami    `json:"principal"`
}

type loggedOut struct {
	LoggedOut bool `json:"logged_out"`
}

func describe(p principal, expires time.Time) whoami {
	w := whoami{Kind: "operator", Actor: p.actor, Scope: "read"}
	if p.write {
		w.Scope = "write"
	}
	if !p.operator {
		w.Kind = "tenant_admin"
		org := p.org.String()
		w.OrganizationID = &org
	}
	if !expires.IsZero() {
		w.ExpiresAt = &expires
	}
	return w
}

// login exchanges an operator token or a tenant administrator's JWT for
// a console session; the credential itself stays out of the browser's
// storage.
func (s *Server) login(c *call) (any, error) {
	req := c.body.(*sessionRequest)
	if req.Credential == "" {
		return nil, badBody("credential", "Field 'credential' is required: an operator token or a tenant administrator's JWT.")
	}
	var p principal
	var notAfter time.Time
	err := s.guard(c.ctx, c.rc, req.Credential, func() (err error) {
		p, notAfter, err = s.verifyCredential(c.ctx, req.Credential)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := s.allowLogin(c.ctx, c.rc, p.actor); err != nil {
		return nil, err
	}
	token, expires, err := s.sessions.create(c.ctx, p, notAfter)
	if err != nil {
		return nil, err
	}
	return sessionResponse{Token: token, ExpiresAt: expires, Principal: describe(p, expires)}, nil
}

func (s *Server) logout(c *call) (any, error) {
	if cred := bearer(c.rc); len(cred) > len(sessionTokenPrefix) && cred[:len(sessionTokenPrefix)] == sessionTokenPrefix {
		if err := s.sessions.end(c.ctx, cred); err != nil {
			return nil, err
		}
	}
	return loggedOut{true}, nil
}

func (s *Server) me(c *call) (any, error) {
	var expires time.Time
	if c.p.session {
		_, expires, _, _ = s.sessions.get(c.ctx, bearer(c.rc)) // checked by authenticate a moment ago
	}
	return describe(c.p, expires), nil
}
