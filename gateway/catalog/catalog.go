// Package catalog is the gateway's view of the model catalog (store
// migration 00011): per organization, which catalog models it may use, on
// which upstream and at which prices. Views are cached in process, so a
// request costs no database round trip; they are dropped on every replica
// at once by Redis invalidation events (as gateway/auth does for keys)
// and, should an event be missed, re-read after a TTL.
package catalog

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/bulkheadhq/bulkhead/gateway/internal/batch"
	"github.com/bulkheadhq/bulkhead/store"
)

// Defaults of Options.
const (
	DefaultTTL     = 30 * time.Second
	DefaultSize    = 100_000
	DefaultTimeout = 2 * time.Second
	// retryAfterFailure: after a failed read the stale view serves this
	// long before the next try, so an outage costs one read per
	// organization per retryAfterFailure, not one per request.
	retryAfterFailure = time.Second
)

// Source reads the catalog as one organization sees it (store.Store).
type Source interface {
	CatalogFor(ctx context.Context, org uuid.UUID) ([]store.CatalogEntry, error)
}

var _ Source = (*store.Store)(nil)

// BatchSource reads many organizations' catalogs in one round trip
// (store.CatalogsFor). A Source that is one too gets the first reads of
// concurrent requests' organizations batched (gateway/internal/batch).
type BatchSource interface {
	CatalogsFor(ctx context.Context, orgs []uuid.UUID) (map[uuid.UUID][]store.CatalogEntry, error)
}

var _ BatchSource = (*store.Store)(nil)

// Options configure a Catalog.
type Options struct {
	Source Source // required
	// Redis carries invalidation events between replicas; nil: none, TTL
	// alone bounds staleness.
	Redis redis.UniversalClient
	// DefaultAllow: an organization may use a shared model it has no
	// grant or revocation for (BULKHEAD_MODEL_ACCESS_DEFAULT=all). When
	// false, only catalog models are served: a model the catalog does not
	// name is nonexistent.
	DefaultAllow bool
	TTL          time.Duration // 0: DefaultTTL
	Size         int           // organizations kept; 0: DefaultSize
	Timeout      time.Duration // one read of the catalog; 0: DefaultTimeout
	Log          *zap.Logger   // nil: none
}

// Model is a catalog model an organization may use.
type Model struct {
	Name     string
	Upstream string // a configured upstream's name
	// Prices per million tokens.
	InputPrice, CachedInputPrice, OutputPrice store.MicroUSD
	Own                                       bool  // the organization's private model
	Created                                   int64 // Unix time it was added
}

// View is the catalog as one organization may use it. It is immutable.
type View struct {
	usable   map[string]*Model
	hidden   map[string]bool // catalog models it may not use (revoked, not granted, disabled)
	restrict bool            // models outside the catalog are nonexistent too
}

// Lookup tells how the catalog decides a request for model: m is the
// catalog model to serve; decided with m nil means the model is, for this
// organization, nonexistent; not decided means the catalog does not name
// it and the configured routes decide, as without a catalog.
func (v *View) Lookup(model string) (m *Model, decided bool) {
	if m := v.usable[model]; m != nil {
		return m, true
	}
	return nil, v.hidden[model] || v.restrict
}

// Hidden reports whether a model the configured routes would serve is,
// for this organization, nonexistent.
func (v *View) Hidden(model string) bool {
	return v.usable[model] == nil && (v.hidden[model] || v.restrict)
}

// Models lists the catalog models the organization may use, by name.
func (v *View) Models() []*Model {
	out := make([]*Model, 0, len(v.usable))
	for _, m := range v.usable {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// newView decides each entry: an organization's own model replaces a
// shared one of the same name (README: Tenancy); a disabled model is
// nonexistent; a shared one needs the organization's grant, or no
// revocation when defaultAllow.
func newView(entries []store.CatalogEntry, defaultAllow bool) *View {
	v := &View{usable: map[string]*Model{}, hidden: map[string]bool{}, restrict: !defaultAllow}
	own := map[string]bool{}
	for _, e := range entries {
		if e.Own {
			own[e.Name] = true
		}
	}
	for _, e := range entries {
		if !e.Own && own[e.Name] {
			continue
		}
		allowed := e.Enabled
		if !e.Own {
			allowed = allowed && (defaultAllow && e.Access == nil || e.Access != nil && *e.Access)
		}
		if !allowed {
			v.hidden[e.Name] = true
			continue
		}
		v.usable[e.Name] = &Model{
			Name: e.Name, Upstream: e.Upstream, InputPrice: e.InputPrice, CachedInputPrice: e.CachedInputPrice,
			OutputPrice: e.OutputPrice, Own: e.Own, Created: e.CreatedAt.Unix(),
		}
	}
	return v
}

// Catalog caches each organization's View. It is safe for concurrent use.
type Catalog struct {
	opts  Options
	log   *zap.Logger
	mu    sync.RWMutex
	views map[uuid.UUID]*cached
	load  singleflight.Group
	// batch gathers concurrent first reads of organizations when
	// Options.Source is a BatchSource; nil: one read per organization.
	batch *batch.Batcher[uuid.UUID, []store.CatalogEntry]
	// gen counts invalidations: a read that began before one is not
	// kept as fresh.
	gen atomic.Uint64
}

type cached struct {
	view   *View
	expiry time.Time
}

// New builds a Catalog.
func New(opts Options) (*Catalog, error) {
	if opts.Source == nil {
		return nil, errors.New("catalog: Options.Source is required")
	}
	if opts.TTL <= 0 {
		opts.TTL = DefaultTTL
	}
	if opts.Size <= 0 {
		opts.Size = DefaultSize
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	log := opts.Log
	if log == nil {
		log = zap.NewNop()
	}
	c := &Catalog{opts: opts, log: log.Named("catalog"), views: map[uuid.UUID]*cached{}}
	if bs, ok := opts.Source.(BatchSource); ok {
		c.batch = batch.New(func(orgs []uuid.UUID) (map[uuid.UUID][]store.CatalogEntry, error) {
			ctx, cancel := context.WithTimeout(context.Background(), opts.Timeout)
			defer cancel()
			return bs.CatalogsFor(ctx, orgs)
		}, 0, 0)
	}
	return c, nil
}

// View returns org's view: the cached one while it is fresh, else one
// read now (concurrent callers share the read). If the read fails, the
// previous view serves on; without one the error is returned. ctx bounds
// the wait, not the read, which Options.Timeout bounds.
func (c *Catalog) View(ctx context.Context, org uuid.UUID, now time.Time) (*View, error) {
	c.mu.RLock()
	e := c.views[org]
	c.mu.RUnlock()
	if e != nil && now.Before(e.expiry) {
		return e.view, nil
	}
	ch := c.load.DoChan(org.String(), func() (any, error) { return c.read(org, e) })
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*View), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Prefetch starts reading org's view in the background unless a fresh one
// is cached or a read is in flight, so that a request can overlap the read
// with its other first-touch round trips (the rate limiter's lease) before
// View needs it. It does not wait.
func (c *Catalog) Prefetch(org uuid.UUID, now time.Time) {
	c.mu.RLock()
	e := c.views[org]
	c.mu.RUnlock()
	if e != nil && now.Before(e.expiry) {
		return
	}
	c.load.DoChan(org.String(), func() (any, error) { return c.read(org, e) }) // buffered: nobody need receive
}

// read reads org's catalog and caches the view.
func (c *Catalog) read(org uuid.UUID, prev *cached) (*View, error) {
	gen := c.gen.Load()
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.Timeout)
	defer cancel()
	var entries []store.CatalogEntry
	var err error
	if c.batch != nil {
		entries, err = c.batch.Do(ctx, org)
	} else {
		entries, err = c.opts.Source.CatalogFor(ctx, org)
	}
	now := time.Now()
	if err != nil {
		if prev == nil {
			return nil, fmt.Errorf("reading the model catalog: %w", err)
		}
		c.log.Warn("model catalog unreadable; serving the last view", zap.Stringer("org", org), zap.Error(err))
		c.put(org, &cached{view: prev.view, expiry: now.Add(retryAfterFailure)})
		return prev.view, nil
	}
	e := &cached{view: newView(entries, c.opts.DefaultAllow), expiry: now.Add(c.opts.TTL)}
	if c.gen.Load() != gen {
		e.expiry = time.Time{} // invalidated while reading: use once, read again next time
	}
	c.put(org, e)
	return e.view, nil
}

func (c *Catalog) put(org uuid.UUID, e *cached) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.views[org]; !ok && len(c.views) >= c.opts.Size {
		for k := range c.views { // bounded: drop one arbitrary organization
			delete(c.views, k)
			break
		}
	}
	c.views[org] = e
}

// Invalidate makes the next request of org read its catalog again.
func (c *Catalog) Invalidate(org uuid.UUID) {
	c.gen.Add(1)
	c.mu.Lock()
	delete(c.views, org)
	c.mu.Unlock()
}

// InvalidateAll makes every organization's next request read again.
func (c *Catalog) InvalidateAll() {
	c.gen.Add(1)
	c.mu.Lock()
	clear(c.views)
	c.mu.Unlock()
}
