package control

import (
	"crypto/sha256"
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/gateway"
	"github.com/bulkheadhq/bulkhead/store"
)

type createOrgRequest struct {
	Name        string `json:"name"`
	CaptureMode string `json:"capture_mode,omitempty"` // full (default) or metadata
	// Sealed: its text stored encrypted under its own data key; default
	// true when the control plane holds a key-encryption key.
	Sealed *bool `json:"sealed,omitempty"`
	// Placement of its data plane: shared (default), schema or
	// database:NAME.
	Placement string `json:"placement,omitempty"`
}

type updateOrgRequest struct {
	Name        *string `json:"name,omitempty"`
	CaptureMode *string `json:"capture_mode,omitempty"`
	Retention   *string `json:"retention,omitempty"` // "30d", "forever" or "default"
}

type orgList struct {
	Object     string               `json:"object"`
	Data       []store.Organization `json:"data"`
	HasMore    bool                 `json:"has_more"`
	NextCursor *string              `json:"next_cursor"`
}

type deletedOrg struct {
	ID      string `json:"id"`
	Deleted bool   `json:"deleted"`
	Keys    int    `json:"keys"`
}

// Org list paging.
const (
	defaultOrgPage = 50
	maxOrgPage     = 200
)

func (s *Server) listOrgs(c *call) (any, error) {
	args := c.rc.QueryArgs()
	limit := defaultOrgPage
	if l, err := gateway.QueryParam(args, "limit"); err != nil {
		return nil, err
	} else if len(l) > 0 {
		n, err := strconv.Atoi(string(l))
		if err != nil || n < 1 || n > maxOrgPage {
			return nil, gateway.BadParam("limit", "want an integer from 1 to "+strconv.Itoa(maxOrgPage))
		}
		limit = n
	}
	var after *store.Cursor
	if a, err := gateway.QueryParam(args, "after"); err != nil {
		return nil, err
	} else if len(a) > 0 {
		cur, err := store.ParseCursor(string(a))
		if err != nil {
			return nil, gateway.BadParam("after", "not a cursor this API returned")
		}
		after = &cur
	}
	orgs, err := c.actions.OrgsPage(c.ctx, after, limit+1)
	if err != nil {
		return nil, err
	}
	out := orgList{Object: "list", Data: orgs}
	if len(orgs) > limit {
		out.Data, out.HasMore = orgs[:limit], true
		last := orgs[limit-1]
		cur := store.Cursor{CreatedAt: last.CreatedAt, ID: last.ID}.String()
		out.NextCursor = &cur
	}
	if out.Data == nil {
		out.Data = []store.Organization{}
	}
	return out, nil
}

// checkName validates a name field (1 to 200 characters of UTF-8).
func checkName(field, name string) error {
	if strings.TrimSpace(name) == "" {
		return badBody(field, "Field '"+field+"' is required and must not be blank.")
	}
	if !utf8.ValidString(name) || utf8.RuneCountInString(name) > 200 || strings.ContainsRune(name, 0) {
		return badBody(field, "Field '"+field+"' must be 1 to 200 characters of UTF-8 text without NUL.")
	}
	return nil
}

// idempotency reads the Idempotency-Key header: the key and a hash of
// the request it comes with (method, path and body).
func idempotency(c *call) (store.Idempotency, error) {
	k := c.rc.Request.Header.Peek("Idempotency-Key")
	if len(k) == 0 {
		return store.Idempotency{}, nil
	}
	if len(k) > 255 {
		return store.Idempotency{}, &gateway.HTTPError{Code: 400, Type: "invalid_request_error", ErrCode: "invalid_header", Param: "Idempotency-Key",
			Msg: "Idempotency-Key must be 1 to 255 printable ASCII characters."}
	}
	for _, b := range k {
		if b < 0x21 || b > 0x7e {
			return store.Idempotency{}, &gateway.HTTPError{Code: 400, Type: "invalid_request_error", ErrCode: "invalid_header", Param: "Idempotency-Key",
				Msg: "Idempotency-Key must be 1 to 255 printable ASCII characters."}
		}
	}
	h := sha256.New()
	h.Write(c.rc.Method())
	h.Write([]byte{0})
	h.Write(c.rc.Path())
	h.Write([]byte{0})
	h.Write(c.rc.PostBody())
	idem := store.Idempotency{Key: string(k)}
	h.Sum(idem.RequestHash[:0])
	return idem, nil
}

func (s *Server) createOrg(c *call) (any, error) {
	req := c.body.(*createOrgRequest)
	if err := checkName("name", req.Name); err != nil {
		return nil, err
	}
	if req.CaptureMode == "" {
		req.CaptureMode = store.CaptureFull
	}
	if !store.ValidCaptureMode(req.CaptureMode) {
		return nil, badBody("capture_mode", "Field 'capture_mode' must be full or metadata.")
	}
	placement, err := store.ParsePlacement(req.Placement)
	if err != nil {
		return nil, badBody("placement", "Field 'placement' must be shared, schema or database:NAME.")
	}
	idem, err := idempotency(c)
	if err != nil {
		return nil, err
	}
	sealed := s.opts.Admin.HasKEK()
	if req.Sealed != nil {
		if *req.Sealed && !sealed {
			return nil, badBody("sealed", "Field 'sealed' cannot be true: no key-encryption key is configured (BULKHEAD_SEAL_KEYSET_FILE or BULKHEAD_SEAL_KEYSET).")
		}
		sealed = *req.Sealed
	}
	org, replayed, err := s.opts.Admin.As(c.p.actor).CreateOrgPlaced(c.ctx,
		store.NewOrg{Name: req.Name, Capture: req.CaptureMode, Sealed: sealed, Placement: placement}, idem)
	if errors.Is(err, store.ErrIdempotencyMismatch) {
		return nil, errIdempotencyMismatch
	}
	if errors.Is(err, store.ErrUnknownTarget) {
		return nil, badBody("placement", "Field 'placement' names a database target that the configuration does not name.")
	}
	c.replay = replayed
	return org, err
}

func (s *Server) getOrg(c *call) (any, error) {
	id, err := c.id("id", errOrgNotFound)
	if err != nil {
		return nil, err
	}
	return s.org(c, id)
}

// org reads an organization through the caller's actions: a tenant
// administrator sees only its own (RLS), so another's id is errOrgNotFound
// exactly like a missing one.
func (s *Server) org(c *call, id uuid.UUID) (store.Organization, error) {
	o, err := c.actions.Org(c.ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Organization{}, errOrgNotFound
	}
	return o, err
}

func (s *Server) updateOrg(c *call) (any, error) {
	id, err := c.id("id", errOrgNotFound)
	if err != nil {
		return nil, err
	}
	req := c.body.(*updateOrgRequest)
	var ch store.OrgChanges
	if req.Name != nil {
		if err := checkName("name", *req.Name); err != nil {
			return nil, err
		}
		ch.Name = *req.Name
	}
	if req.CaptureMode != nil {
		if !store.ValidCaptureMode(*req.CaptureMode) {
			return nil, badBody("capture_mode", "Field 'capture_mode' must be full or metadata.")
		}
		ch.Capture = *req.CaptureMode
	}
	if req.Retention != nil {
		r := store.InheritRetention
		if *req.Retention == "" {
			return nil, badBody("retention", "Field 'retention' must be like 30d, or forever or default.")
		}
		if *req.Retention != "default" {
			if r, err = store.ParseRetention(*req.Retention); err != nil {
				return nil, badBody("retention", "Field 'retention' must be like 30d, or forever or default.")
			}
		}
		ch.Retention = &r
	}
	if ch.Name == "" && ch.Capture == "" && ch.Retention == nil {
		return nil, badBody("", "Nothing to change: give name, capture_mode and/or retention.")
	}
	o, err := s.opts.Admin.As(c.p.actor).UpdateOrg(c.ctx, id, ch)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errOrgNotFound
	}
	return o, err
}

func (s *Server) deleteOrg(c *call) (any, error) {
	id, err := c.id("id", errOrgNotFound)
	if err != nil {
		return nil, err
	}
	hashes, err := s.opts.Admin.As(c.p.actor).DeleteOrg(c.ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errOrgNotFound
	}
	if errors.Is(err, store.ErrMoveInProgress) {
		return nil, errOrgMoving
	}
	if err != nil {
		return nil, err
	}
	s.tell(c, "delete organization", func() error {
		if err := s.opts.Notify.Revoke(c.ctx, hashes...); err != nil {
			return err
		}
		return s.opts.Notify.InvalidateOrg(c.ctx, id)
	})
	return deletedOrg{ID: id.String(), Deleted: true, Keys: len(hashes)}, nil
}
