package control

import (
	"errors"
	"slices"

	"github.com/google/uuid"
	"github.com/valyala/fasthttp"

	"github.com/bulkheadhq/bulkhead/gateway"
	"github.com/bulkheadhq/bulkhead/store"
)

// The model catalog and its access rules, on the store functions `bulkhead
// model ...` runs (store/catalog.go: AddModel, Models, UpdateModel,
// RemoveModel, SetModelAccess), each audited there with the operator's
// actor. Changing the catalog is the operators' (it routes to upstreams
// and sets prices); a tenant administrator reads the catalog as its
// organization sees it (store.CatalogFor, as the app role inside its
// tenant context: RLS keeps other organizations' models and rules out).

// Prices are decimal strings of dollars per million tokens ("0.15"), as
// the API answers them: a float would round them.
type addModelRequest struct {
	Name             string  `json:"name"`
	Upstream         string  `json:"upstream"`
	OrganizationID   *string `json:"organization_id,omitempty"` // absent: a shared model
	InputPrice       string  `json:"input_price_usd"`
	CachedInputPrice *string `json:"cached_input_price_usd,omitempty"` // absent: the input price
	OutputPrice      string  `json:"output_price_usd"`
	Enabled          *bool   `json:"enabled,omitempty"` // absent: true
}

type updateModelRequest struct {
	Upstream         *string `json:"upstream,omitempty"`
	InputPrice       *string `json:"input_price_usd,omitempty"`
	CachedInputPrice *string `json:"cached_input_price_usd,omitempty"`
	OutputPrice      *string `json:"output_price_usd,omitempty"`
	Enabled          *bool   `json:"enabled,omitempty"`
}

type modelAccessRequest struct {
	Model string `json:"model"` // a shared model's name
}

type modelList struct {
	Object string        `json:"object"`
	Data   []store.Model `json:"data"`
}

type catalogList struct {
	Object string               `json:"object"`
	Data   []store.CatalogEntry `json:"data"`
}

type modelAccess struct {
	Object         string `json:"object"` // "model_access"
	OrganizationID string `json:"organization_id"`
	Model          string `json:"model"`
	Allowed        bool   `json:"allowed"`
}

var (
	errModelNotFound = &gateway.HTTPError{Code: fasthttp.StatusNotFound, Type: "invalid_request_error", ErrCode: "not_found",
		Msg: "No such model."}
	errModelExists = &gateway.HTTPError{Code: fasthttp.StatusConflict, Type: "invalid_request_error", ErrCode: "model_exists",
		Msg: "A model of that name already exists in that scope (shared, or the organization's own)."}
)

// modelError maps the catalog's sentinels to answers.
func modelError(err error) error {
	switch {
	case errors.Is(err, store.ErrModelExists):
		return errModelExists
	case errors.Is(err, store.ErrNoOrganization):
		return errOrgNotFound
	case errors.Is(err, store.ErrNotFound):
		return errModelNotFound
	}
	return err
}

// price parses the body's price field (nil stays nil).
func price(field string, s *string) (*store.MicroUSD, error) {
	if s == nil {
		return nil, nil
	}
	p, err := store.ParseUSD(*s)
	if err != nil || p > store.MaxPrice {
		return nil, badBody(field, "Field '"+field+"' must be a decimal amount of dollars per million tokens, 0 to 100000, at most six decimals (\"0.15\").")
	}
	return &p, nil
}

// checkUpstream refuses an upstream the configuration does not have, as
// `bulkhead model add` does: the catalog routes by name.
func (s *Server) checkUpstream(name *string) error {
	if name != nil && !slices.Contains(s.opts.Upstreams, *name) {
		return badBody("upstream", "Field 'upstream' must name a configured upstream.")
	}
	return nil
}

func (s *Server) listModels(c *call) (any, error) {
	ms, err := s.opts.Admin.As(c.p.actor).Models(c.ctx, nil)
	if ms == nil {
		ms = []store.Model{}
	}
	return modelList{"list", ms}, err
}

func (s *Server) addModel(c *call) (any, error) {
	req := c.body.(*addModelRequest)
	if !store.ValidModelName(req.Name) {
		return nil, badBody("name", "Field 'name' is required: 1 to 256 bytes without control characters.")
	}
	if req.Upstream == "" {
		return nil, badBody("upstream", "Field 'upstream' is required.")
	}
	if err := s.checkUpstream(&req.Upstream); err != nil {
		return nil, err
	}
	var org *uuid.UUID
	if req.OrganizationID != nil {
		id, err := uuid.Parse(*req.OrganizationID)
		if err != nil || len(*req.OrganizationID) != 36 {
			return nil, badBody("organization_id", "Field 'organization_id' must be an organization's id (absent: a shared model).")
		}
		org = &id
	}
	in, err := price("input_price_usd", &req.InputPrice)
	if err != nil {
		return nil, err
	}
	out, err := price("output_price_usd", &req.OutputPrice)
	if err != nil {
		return nil, err
	}
	cached := in
	if req.CachedInputPrice != nil {
		if cached, err = price("cached_input_price_usd", req.CachedInputPrice); err != nil {
			return nil, err
		}
	}
	m, err := s.opts.Admin.As(c.p.actor).AddModel(c.ctx, store.Model{OrgID: org, Name: req.Name, Upstream: req.Upstream,
		InputPrice: *in, CachedInputPrice: *cached, OutputPrice: *out, Enabled: req.Enabled == nil || *req.Enabled})
	if err != nil {
		return nil, modelError(err)
	}
	s.tellCatalog(c, org)
	return m, nil
}

// model reads the path's model (any scope; operators only).
func (s *Server) model(c *call) (store.Model, error) {
	id, err := c.id("id", errModelNotFound)
	if err != nil {
		return store.Model{}, err
	}
	m, err := s.opts.Admin.ModelByID(c.ctx, id)
	return m, modelError(err)
}

func (s *Server) updateModel(c *call) (any, error) {
	req := c.body.(*updateModelRequest)
	var ch store.ModelChanges
	var err error
	if ch.InputPrice, err = price("input_price_usd", req.InputPrice); err != nil {
		return nil, err
	}
	if ch.CachedInputPrice, err = price("cached_input_price_usd", req.CachedInputPrice); err != nil {
		return nil, err
	}
	if ch.OutputPrice, err = price("output_price_usd", req.OutputPrice); err != nil {
		return nil, err
	}
	if err := s.checkUpstream(req.Upstream); err != nil {
		return nil, err
	}
	ch.Upstream, ch.Enabled = req.Upstream, req.Enabled
	if ch == (store.ModelChanges{}) {
		return nil, badBody("", "Nothing to change: give upstream, a price or enabled.")
	}
	m, err := s.model(c)
	if err != nil {
		return nil, err
	}
	m, err = s.opts.Admin.As(c.p.actor).UpdateModel(c.ctx, store.ModelRef{Org: m.OrgID, Name: m.Name}, ch)
	if err != nil {
		return nil, modelError(err)
	}
	s.tellCatalog(c, m.OrgID)
	return m, nil
}

func (s *Server) removeModel(c *call) (any, error) {
	m, err := s.model(c)
	if err != nil {
		return nil, err
	}
	m, err = s.opts.Admin.As(c.p.actor).RemoveModel(c.ctx, store.ModelRef{Org: m.OrgID, Name: m.Name})
	if err != nil {
		return nil, modelError(err)
	}
	s.tellCatalog(c, m.OrgID)
	return m, nil
}

// orgCatalog is the catalog as the path's organization sees it, read as
// the app role inside its tenant context.
func (s *Server) orgCatalog(c *call) (any, error) {
	org, err := s.scopedOrg(c)
	if err != nil {
		return nil, err
	}
	es, err := s.opts.Store.CatalogFor(c.ctx, org)
	if es == nil {
		es = []store.CatalogEntry{}
	}
	return catalogList{"list", es}, err
}

func (s *Server) grantModel(c *call) (any, error)  { return s.setModelAccess(c, true) }
func (s *Server) revokeModel(c *call) (any, error) { return s.setModelAccess(c, false) }

func (s *Server) setModelAccess(c *call, allowed bool) (any, error) {
	req := c.body.(*modelAccessRequest)
	if !store.ValidModelName(req.Model) {
		return nil, badBody("model", "Field 'model' is required: a shared model's name.")
	}
	org, err := c.id("id", errOrgNotFound)
	if err != nil {
		return nil, err
	}
	if err := s.opts.Admin.As(c.p.actor).SetModelAccess(c.ctx, org, req.Model, allowed); err != nil {
		return nil, modelError(err)
	}
	s.tellCatalog(c, &org)
	return modelAccess{"model_access", org.String(), req.Model, allowed}, nil
}

// tellCatalog tells running gateways that org's catalog (nil: the shared
// one) changed, as `bulkhead model ...` does.
func (s *Server) tellCatalog(c *call, org *uuid.UUID) {
	s.tell(c, "catalog change", func() error { return s.opts.Notify.InvalidateCatalog(c.ctx, org) })
}
