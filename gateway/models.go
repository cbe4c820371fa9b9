package gateway

import (
	"encoding/json"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
	"golang.org/x/sync/singleflight"
)

// modelEntry is one item of GET /v1/models and the answer of
// GET /v1/models/{id}: OpenAI's model object, every field present.
type modelEntry struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

const (
	modelsTTL          = time.Minute     // how long the default upstream's list is reused
	modelsFetchTimeout = 5 * time.Second // one fetch of that list
	maxModelID         = 256             // longest model id GET /v1/models/{id} looks up, in bytes
)

// modelList caches the default upstream's own model list. Readers load the
// current snapshot without a lock; a stale one is replaced by one fetch
// that concurrent callers share, so no lock is held across the upstream
// call and a slow upstream never queues callers behind each other.
type modelList struct {
	cur        atomic.Pointer[modelSnapshot] // nil until the first fetch
	fetch      singleflight.Group
	refreshing atomic.Bool // a background refresh (for metrics labels) is under way
}

// modelSnapshot is one fetch of the default upstream's list; never
// modified once stored.
type modelSnapshot struct {
	models  []modelEntry
	created map[string]int64 // id -> created, of models
	fetched time.Time
}

func (m *modelSnapshot) fresh() bool { return m != nil && time.Since(m.fetched) < modelsTTL }

func (m *modelSnapshot) has(id string) bool {
	if m == nil {
		return false
	}
	_, ok := m.created[id]
	return ok
}

// models answers GET /v1/models: the routed models plus the default
// upstream's own list (fetched at most once a minute; if it cannot be
// fetched, the routed models alone).
func (s *Server) models(rc *fasthttp.RequestCtx) error {
	p, err := s.authenticate(s.base, rc) // each look-up has its own timeout
	if err != nil {
		return err
	}
	list, err := s.modelsFor(p)
	if err != nil {
		return err
	}
	return writeJSON(rc, struct {
		Object string       `json:"object"`
		Data   []modelEntry `json:"data"`
	}{Object: "list", Data: list})
}

// model answers GET /v1/models/{id} (the SDKs' models.retrieve) for any id
// GET /v1/models lists. id is the request path after "/v1/models/",
// already percent-decoded.
func (s *Server) model(rc *fasthttp.RequestCtx, id string) error {
	p, err := s.authenticate(s.base, rc)
	if err != nil {
		return err
	}
	if !validModelID(id) {
		return errModelNotFound
	}
	list, err := s.modelsFor(p)
	if err != nil {
		return err
	}
	for _, m := range list {
		if m.ID == id {
			return writeJSON(rc, m)
		}
	}
	return modelNotFound(id)
}

// validModelID accepts ids that may be looked up and quoted back: 1 to
// maxModelID bytes of UTF-8 without control characters.
func validModelID(id string) bool {
	if id == "" || len(id) > maxModelID || !utf8.ValidString(id) {
		return false
	}
	return strings.IndexFunc(id, unicode.IsControl) < 0
}

// listModels is the list GET /v1/models shows: the routes' exactly named
// models, then the default upstream's models that route to it. Every entry
// has a created time: the upstream's where it lists the model, else the
// time this gateway loaded its configuration.
func (s *Server) listModels() []modelEntry {
	snap := s.upstreamModels()
	out := s.router.routedModels()
	seen := make(map[string]bool, len(out))
	for i := range out {
		seen[out[i].ID] = true
		out[i].Created = s.configured
		if snap != nil && snap.created[out[i].ID] > 0 {
			out[i].Created = snap.created[out[i].ID]
		}
	}
	if snap != nil {
		for _, m := range snap.models {
			if !seen[m.ID] && s.router.route(m.ID) == s.router.def {
				out = append(out, m)
			}
		}
	}
	return out
}

// upstreamModels returns the default upstream's list, fetching it when
// the cached one is older than modelsTTL; nil without a default upstream
// or before any fetch succeeded.
func (s *Server) upstreamModels() *modelSnapshot {
	if s.router.def == nil {
		return nil
	}
	if snap := s.modelList.cur.Load(); snap.fresh() {
		return snap
	}
	v, _, _ := s.modelList.fetch.Do("", func() (any, error) { return s.fetchModels(), nil })
	return v.(*modelSnapshot)
}

// refreshModelsSoon starts a background fetch of the default upstream's
// list when the cached one is stale and no fetch is under way. Shutdown
// waits for it.
func (s *Server) refreshModelsSoon() {
	if s.router.def == nil || s.modelList.cur.Load().fresh() || !s.modelList.refreshing.CompareAndSwap(false, true) {
		return
	}
	s.background.Add(1)
	go func() {
		defer s.background.Done()
		defer s.modelList.refreshing.Store(false)
		s.upstreamModels()
	}()
}

// fetchModels fetches the default upstream's list and stores it. After a
// failure the previous models stay, marked fresh: the next try is in a
// minute, not on every request.
func (s *Server) fetchModels() *modelSnapshot {
	prev := s.modelList.cur.Load()
	if prev.fresh() { // a fetch finished between the caller's check and Do
		return prev
	}
	next := &modelSnapshot{fetched: time.Now()}
	if prev != nil {
		next.models, next.created = prev.models, prev.created
	}
	def := s.router.def
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(fasthttp.MethodGet)
	req.Header.SetHost(def.host)
	req.URI().SetScheme(def.scheme)
	req.URI().SetHost(def.host)
	req.URI().SetPath(def.basePath + "/models")
	if def.bearer != "" {
		req.Header.Set(fasthttp.HeaderAuthorization, def.bearer)
	}
	req.Header.Set(fasthttp.HeaderAcceptEncoding, "identity") // as for every upstream call (encoding.go)
	var list struct {
		Data []modelEntry `json:"data"`
	}
	if err := def.client.DoTimeout(req, resp, modelsFetchTimeout); err == nil && resp.StatusCode() == fasthttp.StatusOK &&
		decodeModels(resp, &list) == nil {
		next.models = make([]modelEntry, 0, len(list.Data))
		next.created = make(map[string]int64, len(list.Data))
		for _, m := range list.Data {
			if !validModelID(m.ID) {
				continue
			}
			m.Object = "model"
			if m.Created <= 0 {
				m.Created = s.configured
			}
			if m.OwnedBy == "" {
				m.OwnedBy = def.name
			}
			next.models = append(next.models, m)
			next.created[m.ID] = m.Created
		}
	}
	s.modelList.cur.Store(next)
	return next
}

// decodeModels reads an upstream's model list, decoded if the upstream
// compressed it anyway.
func decodeModels(resp *fasthttp.Response, list any) error {
	body, err := readUpstreamBody(resp, maxUpstreamBody)
	if err != nil {
		return err
	}
	return json.Unmarshal(body, list)
}

// modelLabel is model's value of the metrics' model label. Callers choose
// model names freely, so only names the configuration or the default
// upstream vouches for get their own series: an exact route's model, the
// prefix route's pattern ("gpt-*") for names it matches, a model the
// default upstream lists (bounded by maxModelLabels); anything else is
// "other".
func (s *Server) modelLabel(model string) string {
	if model == "" {
		return "none"
	}
	r := s.router
	if _, ok := r.exact[model]; ok {
		return model
	}
	for _, p := range r.prefixes {
		if strings.HasPrefix(model, p.prefix) {
			return p.prefix + "*"
		}
	}
	if r.def == nil {
		return "other"
	}
	snap := s.modelList.cur.Load()
	if !snap.fresh() {
		s.refreshModelsSoon() // this request counts as "other" if its model is not known yet
	}
	if snap.has(model) {
		return s.metrics.models.label(model)
	}
	return "other"
}
