package control

import (
	"errors"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/bulkheadhq/bulkhead/gateway"
	"github.com/bulkheadhq/bulkhead/store"
)

// Organization admin keys: operators make them for a tenant's
// administrators (a sign-up backend, say, that holds no JWT issuer). A
// key authorizes exactly what a tenant administrator's JWT does, through
// the same path (store.TenantAdmin, the app role inside the
// organization's tenant context); see auth.go.

type createAdminKeyRequest struct {
	Name             string `json:"name"`
	ExpiresInSeconds int64  `json:"expires_in_seconds,omitempty"` // 0: never
}

// createdAdminKey is the answer to an admin key's creation: the only time
// the key itself is shown.
type createdAdminKey struct {
	ID             string     `json:"id"`
	OrganizationID string     `json:"organization_id"`
	Key            string     `json:"key"`
	Name           string     `json:"name"`
	DisplayPrefix  string     `json:"display_prefix"`
	ExpiresAt      *time.Time `json:"expires_at"`
	CreatedAt      time.Time  `json:"created_at"`
}

type adminKeyList struct {
	Object string              `json:"object"`
	Data   []store.OrgAdminKey `json:"data"`
}

var errAdminKeyNotFound = &gateway.HTTPError{Code: fasthttp.StatusNotFound, Type: "invalid_request_error", ErrCode: "not_found",
	Msg: "No such admin key."}

func (s *Server) createAdminKey(c *call) (any, error) {
	req := c.body.(*createAdminKeyRequest)
	if err := checkName("name", req.Name); err != nil {
		return nil, err
	}
	if req.ExpiresInSeconds < 0 || time.Duration(req.ExpiresInSeconds) > maxLifetime/time.Second {
		return nil, badBody("expires_in_seconds", "Field 'expires_in_seconds' must be from 0 (never) to 100 years.")
	}
	org, err := c.id("id", errOrgNotFound)
	if err != nil {
		return nil, err
	}
	var expires *time.Time
	if req.ExpiresInSeconds > 0 {
		t := time.Now().Add(time.Duration(req.ExpiresInSeconds) * time.Second).UTC()
		expires = &t
	}
	key, hash, display := NewOrgAdminKey(org)
	k, err := s.opts.Admin.As(c.p.actor).CreateOrgAdminKey(c.ctx, org, req.Name, hash, display, expires)
	if errors.Is(err, store.ErrNoOrganization) {
		return nil, errOrgNotFound
	}
	if err != nil {
		return nil, err
	}
	return createdAdminKey{ID: k.ID.String(), OrganizationID: k.OrgID.String(), Key: key, Name: k.Name,
		DisplayPrefix: k.DisplayPrefix, ExpiresAt: k.ExpiresAt, CreatedAt: k.CreatedAt}, nil
}

func (s *Server) listAdminKeys(c *call) (any, error) {
	org, err := c.id("id", errOrgNotFound)
	if err != nil {
		return nil, err
	}
	if _, err := s.org(c, org); err != nil {
		return nil, err
	}
	ks, err := s.opts.Admin.OrgAdminKeys(c.ctx, org)
	if ks == nil {
		ks = []store.OrgAdminKey{}
	}
	return adminKeyList{"list", ks}, err
}

func (s *Server) revokeAdminKey(c *call) (any, error) {
	id, err := c.id("id", errAdminKeyNotFound)
	if err != nil {
		return nil, err
	}
	k, err := s.opts.Admin.As(c.p.actor).RevokeOrgAdminKey(c.ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errAdminKeyNotFound
	}
	return k, err
}
