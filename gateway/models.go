package gateway

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// modelEntry is one item of GET /v1/models.
type modelEntry struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created,omitempty"`
	OwnedBy string `json:"owned_by"`
}

// modelsTTL is how long the default upstream's model list is reused.
const modelsTTL = time.Minute

// modelList caches the default upstream's own model list.
type modelList struct {
	mu      sync.Mutex
	models  []modelEntry
	fetched time.Time
}

// models answers GET /v1/models: the routed models plus the default
// upstream's own list (fetched at most once a minute; if it cannot be
// fetched, the routed models alone).
func (s *Server) models(rc *fasthttp.RequestCtx) error {
	_, err := s.authenticate(s.base, rc) // each look-up has its own timeout
	if err != nil {
		return err
	}
	out := struct {
		Object string       `json:"object"`
		Data   []modelEntry `json:"data"`
	}{Object: "list", Data: s.router.routedModels()}
	seen := map[string]bool{}
	for _, m := range out.Data {
		seen[m.ID] = true
	}
	for _, m := range s.upstreamModels() {
		if !seen[m.ID] && s.router.route(m.ID) == s.router.def {
			out.Data = append(out.Data, m)
		}
	}
	return writeJSON(rc, out)
}

func (s *Server) upstreamModels() []modelEntry {
	def := s.router.def
	if def == nil {
		return nil
	}
	s.modelList.mu.Lock()
	defer s.modelList.mu.Unlock()
	if time.Since(s.modelList.fetched) < modelsTTL {
		return s.modelList.models
	}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(fasthttp.MethodGet)
	req.Header.SetHost(def.host)
	req.URI().SetScheme(def.scheme)
	req.URI().SetHost(def.host)
	req.URI().SetPath(def.basePath + "/models")
	if def.apiKey != "" {
		req.Header.Set(fasthttp.HeaderAuthorization, "Bearer "+def.apiKey)
	}
	s.modelList.fetched = time.Now() // also after a failure: retry in a minute, not per request
	if err := def.client.DoTimeout(req, resp, 5*time.Second); err != nil || resp.StatusCode() != fasthttp.StatusOK {
		return s.modelList.models
	}
	var list struct {
		Data []modelEntry `json:"data"`
	}
	if json.Unmarshal(resp.Body(), &list) == nil {
		for i := range list.Data {
			list.Data[i].Object = "model"
		}
		s.modelList.models = list.Data
	}
	return s.modelList.models
}
