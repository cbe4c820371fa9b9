package gateway

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/gateway/catalog"
)

// catalogViews gives an organization's view of the model catalog
// (catalog.Catalog): cached in process, so a request costs no database
// round trip.
type catalogViews interface {
	View(ctx context.Context, org uuid.UUID, now time.Time) (*catalog.View, error)
	Prefetch(org uuid.UUID, now time.Time)
}

var _ catalogViews = (*catalog.Catalog)(nil)

var errCatalogUnavailable = &HTTPError{Code: fasthttp.StatusServiceUnavailable, Type: "server_error", ErrCode: "catalog_unavailable",
	Msg: "The gateway cannot read which models this organization may use right now; retry shortly."}

// resolve chooses the upstream for p's request of model, and the catalog
// model (with its prices) when the catalog names it. A model p may not use
// (revoked, never granted, disabled, or outside the catalog under
// BULKHEAD_MODEL_ACCESS_DEFAULT=none) is errModelNotFound, the answer for
// a model no route serves; another tenant's private model is, for p,
// a name the catalog does not know, routed like any other.
func (s *Server) resolve(p *auth.Principal, model string, now time.Time) (*upstream, *catalog.Model, *HTTPError) {
	if s.catalog == nil {
		return s.routeConfigured(model)
	}
	v, err := s.catalog.View(s.base, p.Org, now)
	if err != nil {
		return nil, nil, withCause(errCatalogUnavailable, err)
	}
	m, decided := v.Lookup(model)
	if !decided {
		return s.routeConfigured(model)
	}
	if m == nil {
		return nil, nil, errModelNotFound
	}
	up := s.router.byName[m.Upstream] // the catalog's upstream, whatever the routes say
	if up == nil {
		// The configuration lost the upstream the catalog names (model
		// add checks it, a later configuration may not have it).
		s.log.Warn("catalog model names no configured upstream", zap.String("model", m.Name), zap.String("upstream", m.Upstream))
		return nil, nil, errModelNotFound
	}
	return up, m, nil
}

func (s *Server) routeConfigured(model string) (*upstream, *catalog.Model, *HTTPError) {
	if up := s.router.route(model); up != nil {
		return up, nil, nil
	}
	return nil, nil, errModelNotFound
}

// modelsFor is GET /v1/models for p: the configured list without the
// models p may not use, then the catalog models p may use that it lacks.
func (s *Server) modelsFor(p *auth.Principal) ([]modelEntry, error) {
	all := s.listModels()
	if s.catalog == nil {
		return all, nil
	}
	v, err := s.catalog.View(s.base, p.Org, time.Now())
	if err != nil {
		return nil, withCause(errCatalogUnavailable, err)
	}
	out := all[:0]
	seen := map[string]bool{}
	for _, m := range all {
		cm, decided := v.Lookup(m.ID)
		if decided && cm == nil {
			continue
		}
		if cm != nil {
			m.OwnedBy = cm.Upstream // the catalog routes it
		}
		seen[m.ID] = true
		out = append(out, m)
	}
	for _, m := range v.Models() {
		if !seen[m.Name] {
			out = append(out, modelEntry{ID: m.Name, Object: "model", Created: m.Created, OwnedBy: m.Upstream})
		}
	}
	return out, nil
}

// prefetch starts the first reads of org's catalog view and budget list
// that no cache holds, in the background, as soon as the request's tenant
// is known: a first-touch request then waits for them alongside its
// rate-limit lease instead of one after another (issue 17). Only an
// authenticated tenant is prefetched, and a cached one costs a map read.
func (s *Server) prefetch(org uuid.UUID, now time.Time) {
	if s.catalog != nil {
		s.catalog.Prefetch(org, now)
	}
	if s.budgets != nil {
		s.budgets.Prefetch(org)
	}
}
