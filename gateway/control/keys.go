package control

import (
	"errors"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/gateway/apikey"
	"github.com/bulkheadhq/bulkhead/store"
)

type createKeyRequest struct {
	Name               string `json:"name"`
	RateLimitPerMinute int    `json:"rate_limit_per_minute"`
	TokensPerMinute    int    `json:"tokens_per_minute,omitempty"`  // 0: no token limit
	ExpiresInSeconds   int64  `json:"expires_in_seconds,omitempty"` // 0: never
}

type updateKeyRequest struct {
	RateLimitPerMinute *int `json:"rate_limit_per_minute,omitempty"`
	TokensPerMinute    *int `json:"tokens_per_minute,omitempty"` // 0 removes the token limit
}

type rotateKeyRequest struct {
	OverlapSeconds *int64 `json:"overlap_seconds,omitempty"` // how long the old key keeps working; default 3600
}

// createdKey is the answer to a key's create or rotation: the only time
// the key itself is shown. A create replayed from its Idempotency-Key
// has no key (it is not stored anywhere).
type createdKey struct {
	ID                 string     `json:"id"`
	OrganizationID     string     `json:"organization_id"`
	Key                string     `json:"key,omitempty"`
	Name               string     `json:"name"`
	DisplayPrefix      string     `json:"display_prefix"`
	RateLimitPerMinute int        `json:"rate_limit_per_minute"`
	TokensPerMinute    int        `json:"tokens_per_minute,omitempty"`
	ExpiresAt          *time.Time `json:"expires_at,omitempty"`
	CreatedAt          time.Time  `json:"created_at"`
	Replaces           *string    `json:"replaces,omitempty"`
	ReplacedExpiresAt  *time.Time `json:"replaced_expires_at,omitempty"`
}

type keyList struct {
	Object string      `json:"object"`
	Data   []store.Key `json:"data"`
}

// Bounds of key settings.
const (
	maxLimit    = 1 << 30
	maxLifetime = 100 * 365 * 24 * time.Hour
)

func newCreated(key string, k store.Key) createdKey {
	return createdKey{ID: k.ID.String(), OrganizationID: k.OrgID.String(), Key: key, Name: k.Name, DisplayPrefix: k.DisplayPrefix,
		RateLimitPerMinute: k.RateLimitPerMinute, TokensPerMinute: k.TokensPerMinute, ExpiresAt: k.ExpiresAt, CreatedAt: k.CreatedAt}
}

func (s *Server) listKeys(c *call) (any, error) {
	org, err := c.id("id", errOrgNotFound)
	if err != nil {
		return nil, err
	}
	keys, err := c.actions.Keys(c.ctx, org)
	if errors.Is(err, store.ErrNoOrganization) {
		return nil, errOrgNotFound
	}
	if keys == nil {
		keys = []store.Key{}
	}
	return keyList{Object: "list", Data: keys}, err
}

func (s *Server) createKey(c *call) (any, error) {
	org, err := c.id("id", errOrgNotFound)
	if err != nil {
		return nil, err
	}
	req := c.body.(*createKeyRequest)
	if err := checkName("name", req.Name); err != nil {
		return nil, err
	}
	if req.RateLimitPerMinute < 1 || req.RateLimitPerMinute > maxLimit {
		return nil, badBody("rate_limit_per_minute", "Field 'rate_limit_per_minute' is required: requests per minute, from 1 to 1073741824.")
	}
	if req.TokensPerMinute < 0 || req.TokensPerMinute > maxLimit {
		return nil, badBody("tokens_per_minute", "Field 'tokens_per_minute' must be from 0 (no limit) to 1073741824.")
	}
	if req.ExpiresInSeconds < 0 || time.Duration(req.ExpiresInSeconds) > maxLifetime/time.Second {
		return nil, badBody("expires_in_seconds", "Field 'expires_in_seconds' must be from 0 (never) to 100 years.")
	}
	idem, err := idempotency(c)
	if err != nil {
		return nil, err
	}
	key, err := apikey.Generate(org)
	if err != nil {
		return nil, err
	}
	nk := store.NewKey{OrgID: org, Hash: apikey.Hash([]byte(key)), DisplayPrefix: apikey.Display(key), Name: req.Name,
		RateLimitPerMinute: req.RateLimitPerMinute, TokensPerMinute: req.TokensPerMinute}
	if req.ExpiresInSeconds > 0 {
		t := time.Now().Add(time.Duration(req.ExpiresInSeconds) * time.Second).UTC()
		nk.ExpiresAt = &t
	}
	k, replayed, err := c.actions.CreateKeyOnce(c.ctx, nk, idem)
	switch {
	case errors.Is(err, store.ErrNoOrganization):
		return nil, errOrgNotFound
	case errors.Is(err, store.ErrIdempotencyMismatch):
		return nil, errIdempotencyMismatch
	case err != nil:
		return nil, err
	}
	if replayed {
		c.replay = true
		key = "" // shown once, with the first answer
	}
	return newCreated(key, k), nil
}

// keyID parses the key id of the path and finds its organization through
// the caller's actions (a tenant administrator: only its own keys).
func (s *Server) keyID(c *call) (id, org uuid.UUID, err error) {
	kid, err := c.id("id", errKeyNotFound)
	if err != nil {
		return id, org, err
	}
	o, err := c.actions.KeyOrg(c.ctx, kid)
	if errors.Is(err, store.ErrNotFound) {
		return id, org, errKeyNotFound
	}
	return kid, o, err
}

func (s *Server) updateKey(c *call) (any, error) {
	req := c.body.(*updateKeyRequest)
	if req.RateLimitPerMinute == nil && req.TokensPerMinute == nil {
		return nil, badBody("", "Nothing to change: give rate_limit_per_minute and/or tokens_per_minute.")
	}
	if r := req.RateLimitPerMinute; r != nil && (*r < 1 || *r > maxLimit) {
		return nil, badBody("rate_limit_per_minute", "Field 'rate_limit_per_minute' must be from 1 to 1073741824.")
	}
	if t := req.TokensPerMinute; t != nil && (*t < 0 || *t > maxLimit) {
		return nil, badBody("tokens_per_minute", "Field 'tokens_per_minute' must be from 0 (no limit) to 1073741824.")
	}
	id, err := c.id("id", errKeyNotFound)
	if err != nil {
		return nil, err
	}
	k, err := c.actions.UpdateKeyLimits(c.ctx, id, req.RateLimitPerMinute, req.TokensPerMinute)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errKeyNotFound
	}
	if err != nil {
		return nil, err
	}
	s.tell(c, "update key", func() error { return s.opts.Notify.Invalidate(c.ctx, k.Hash) })
	return k, nil
}

func (s *Server) revokeKey(c *call) (any, error) {
	id, err := c.id("id", errKeyNotFound)
	if err != nil {
		return nil, err
	}
	k, err := c.actions.RevokeKey(c.ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errKeyNotFound
	}
	if err != nil {
		return nil, err
	}
	s.tell(c, "revoke key", func() error { return s.opts.Notify.Revoke(c.ctx, k.Hash) })
	return k, nil
}

func (s *Server) rotateKey(c *call) (any, error) {
	req := c.body.(*rotateKeyRequest)
	overlap := time.Hour
	if o := req.OverlapSeconds; o != nil {
		if *o < 0 || time.Duration(*o) > maxLifetime/time.Second {
			return nil, badBody("overlap_seconds", "Field 'overlap_seconds' must be from 0 (the old key stops now) to 100 years.")
		}
		overlap = time.Duration(*o) * time.Second
	}
	id, org, err := s.keyID(c)
	if err != nil {
		return nil, err
	}
	key, err := apikey.Generate(org)
	if err != nil {
		return nil, err
	}
	old, created, err := c.actions.RotateKey(c.ctx, id, overlap, store.NewKey{Hash: apikey.Hash([]byte(key)), DisplayPrefix: apikey.Display(key)})
	if errors.Is(err, store.ErrNotFound) {
		return nil, errKeyNotFound
	}
	if err != nil {
		return nil, err
	}
	s.tell(c, "rotate key", func() error { return s.opts.Notify.Invalidate(c.ctx, old.Hash) })
	out := newCreated(key, created)
	oldID := old.ID.String()
	out.Replaces, out.ReplacedExpiresAt = &oldID, old.ExpiresAt
	return out, nil
}

// tell runs a notification of running gateways after a change committed.
// Its failure does not undo the change: the gateways then catch up
// within BULKHEAD_AUTH_CACHE_TTL, and the log says so.
func (s *Server) tell(c *call, what string, fn func() error) {
	if err := fn(); err != nil {
		s.log.Warn("change saved, but running gateways could not be told; they catch up within BULKHEAD_AUTH_CACHE_TTL",
			zap.String("action", what), zap.String("actor", c.p.actor), zap.Error(err))
	}
}
