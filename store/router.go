package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// router resolves an organization to its place and the pool that reaches
// it: the main pool for the shared place and tenant schemas, a pool per
// database target, opened at its first use, bounded, its connections
// closed when idle.
type router struct {
	mu      sync.Mutex
	targets targetSet
	pools   map[string]*pgxpool.Pool
	opts    TargetPoolOptions
	cache   map[uuid.UUID]placementEntry
	ttl     time.Duration // placementTTL; tests shorten it (export_test.go)
}

// TargetPoolOptions bounds the pools of the database targets.
type TargetPoolOptions struct {
	// MaxConns caps each target's pool (0: 4).
	MaxConns int32
	// IdleTimeout closes a connection idle this long (0: one minute), so
	// that a target no tenant uses holds no connection.
	IdleTimeout time.Duration
}

// placementTTL is how long an organization's placement is reused before
// it is read again. A placement changes only by a move (`bulkhead org
// move`, move.go), which publishes an invalidation (InvalidatePlacement)
// and, since an instance may miss it, waits MoveOptions.Grace (at least
// this bound plus a write's timeout) before relying on every writer and
// reader having seen the change.
const placementTTL = 10 * time.Second

type placementEntry struct {
	p       Placement
	capture string
	// held: a move of the organization is before its cut-over (move_step
	// hold, copy or copied): the writer parks its records (writer_places.go).
	held    bool
	expires time.Time
}

// heldSQL is true while a move of the organization holds its records.
const heldSQL = `coalesce(move_step IN ('hold', 'copy', 'copied'), false)`

func (r *router) cacheTTL() time.Duration {
	if r.ttl > 0 {
		return r.ttl
	}
	return placementTTL
}

// InvalidatePlacement makes the next use of org's placement read it
// again (a move publishes it on the auth invalidation channel: see
// cmd/bulkhead). Safe for concurrent use.
func (s *Store) InvalidatePlacement(org uuid.UUID) {
	s.router.mu.Lock()
	delete(s.router.cache, org)
	s.router.mu.Unlock()
}

// InvalidatePlacements forgets every cached placement (after a missed
// invalidation, when the channel is subscribed again).
func (s *Store) InvalidatePlacements() {
	s.router.mu.Lock()
	s.router.cache = nil
	s.router.mu.Unlock()
}

// UseTargets gives the Store the database targets its organizations may
// be placed on. Call it before serving.
func (s *Store) UseTargets(ts []Target, o TargetPoolOptions) {
	if o.MaxConns <= 0 {
		o.MaxConns = 4
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = time.Minute
	}
	s.router.mu.Lock()
	defer s.router.mu.Unlock()
	s.router.targets, s.router.opts = newTargetSet(ts), o
}

// targetNames are the configured targets' names, in order.
func (r *router) targetNames() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := make([]string, 0, len(r.targets))
	for n := range r.targets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// closeTargets closes every target pool (Store.Close).
func (r *router) closeTargets() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.pools {
		p.Close()
	}
	r.pools = nil
}

// placementOf returns org's placement, cached for placementTTL.
func (s *Store) placementOf(ctx context.Context, org uuid.UUID) (Placement, error) {
	p, _, err := s.orgPlacement(ctx, org)
	return p, err
}

// orgPlacement returns org's placement and capture mode, cached for
// placementTTL (so a capture-mode change reaches the writers of a
// database target's tenants within it; the shared tables and tenant
// schemas read it at each insert). They are read in org's own tenant
// context, where RLS shows the app role its organization only; an
// organization that does not exist is shared (its rows are refused
// there).
func (s *Store) orgPlacement(ctx context.Context, org uuid.UUID) (Placement, string, error) {
	e, err := s.orgRoute(ctx, org)
	return e.p, e.capture, err
}

// orgRoute is orgPlacement with whether a move holds org's records.
func (s *Store) orgRoute(ctx context.Context, org uuid.UUID) (placementEntry, error) {
	r := &s.router
	r.mu.Lock()
	e, ok := r.cache[org]
	r.mu.Unlock()
	if ok && time.Now().Before(e.expires) {
		return e, nil
	}
	var text, capture string
	var held bool
	err := s.inTenantRead(ctx, org, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT placement, capture_mode, `+heldSQL+` FROM organizations WHERE id = $1`, org).Scan(&text, &capture, &held)
	})
	if errors.Is(err, ErrNotFound) {
		return placementEntry{p: Placement{Kind: PlaceShared}, capture: CaptureFull}, nil
	}
	if err != nil {
		return placementEntry{}, fmt.Errorf("reading the placement of %s: %w", org, err)
	}
	p, err := ParsePlacement(text)
	if err != nil {
		return placementEntry{}, err
	}
	e = placementEntry{p: p, capture: capture, held: held, expires: time.Now().Add(r.cacheTTL())}
	r.mu.Lock()
	if r.cache == nil || len(r.cache) > 100_000 {
		r.cache = map[uuid.UUID]placementEntry{}
	}
	r.cache[org] = e
	r.mu.Unlock()
	return e, nil
}

// prefetchPlacements reads, in one round trip, the placements of the
// organizations of orgs that the cache lacks (or holds expired): one
// read-only transaction setting each one's tenant context in turn before
// reading its own row, pipelined. The writer calls it once per batch, so
// that thousands of tenants cost one round trip, not one each.
func (s *Store) prefetchPlacements(ctx context.Context, orgs []uuid.UUID) error {
	r := &s.router
	now := time.Now()
	var miss []uuid.UUID
	r.mu.Lock()
	for _, org := range orgs {
		if e, ok := r.cache[org]; !ok || !now.Before(e.expires) {
			miss = append(miss, org)
		}
	}
	r.mu.Unlock()
	if len(miss) < 2 {
		return nil // orgPlacement reads a single one itself
	}
	got := make(map[uuid.UUID]placementEntry, len(miss))
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		for _, org := range miss {
			b.Queue(`SELECT set_config('`+TenantSetting+`', $1::text, true)`, org.String())
			b.Queue(`SELECT placement, capture_mode, `+heldSQL+` FROM organizations WHERE id = $1`, org)
		}
		br := tx.SendBatch(ctx, b)
		defer br.Close()
		for _, org := range miss {
			if _, err := br.Exec(); err != nil {
				return err
			}
			var text, capture string
			var held bool
			err := br.QueryRow().Scan(&text, &capture, &held)
			if errors.Is(err, pgx.ErrNoRows) {
				continue // no such organization: orgPlacement says shared
			}
			if err != nil {
				return err
			}
			p, err := ParsePlacement(text)
			if err != nil {
				return err
			}
			got[org] = placementEntry{p: p, capture: capture, held: held, expires: now.Add(r.cacheTTL())}
		}
		return br.Close()
	})
	if err != nil {
		return fmt.Errorf("reading placements: %w", classify(err))
	}
	r.mu.Lock()
	if r.cache == nil || len(r.cache)+len(got) > 100_000 {
		r.cache = map[uuid.UUID]placementEntry{}
	}
	for org, e := range got {
		r.cache[org] = e
	}
	r.mu.Unlock()
	return nil
}

// poolFor returns the pool of place p, opening a target's at its first
// use (without waiting for the target: connections are made on demand).
func (s *Store) poolFor(ctx context.Context, p Place) (*pgxpool.Pool, error) {
	if p.Target == "" {
		return s.pool, nil
	}
	r := &s.router
	r.mu.Lock()
	defer r.mu.Unlock()
	if pool, ok := r.pools[p.Target]; ok {
		return pool, nil
	}
	t, err := r.targets.get(p.Target)
	if err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(t.DSN)
	if err != nil {
		return nil, fmt.Errorf("database target %s: the runtime URL does not parse", t.Name)
	}
	cfg.MaxConns, cfg.MinConns = r.opts.MaxConns, 0
	cfg.MaxConnIdleTime = r.opts.IdleTimeout
	cfg.HealthCheckPeriod = min(r.opts.IdleTimeout, time.Minute)
	configureConns(cfg, s.txScoped)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("database target %s: %w", t.Name, err)
	}
	if r.pools == nil {
		r.pools = map[string]*pgxpool.Pool{}
	}
	r.pools[p.Target] = pool
	return pool, nil
}

// placeOf is org's place and the pool reaching it.
func (s *Store) placeOf(ctx context.Context, org uuid.UUID) (Place, *pgxpool.Pool, error) {
	pl, err := s.placementOf(ctx, org)
	if err != nil {
		return Place{}, nil, err
	}
	p := PlaceOf(org, pl)
	pool, err := s.poolFor(ctx, p)
	return p, pool, err
}

// inPlaceRead runs fn in a read-only transaction in org's tenant context
// on org's place (begin and then as beginTenant takes them), with the
// place, whose tables fn names through placeSQL.
func (s *Store) inPlaceRead(ctx context.Context, org uuid.UUID, then string, fn func(tx pgx.Tx, p Place) error) error {
	p, pool, err := s.placeOf(ctx, org)
	if err != nil {
		return err
	}
	return classify(beginTenant(ctx, pool, "BEGIN READ ONLY", org, then, func(tx pgx.Tx) error { return fn(tx, p) }))
}

// placeSQL names the data-plane tables of a read query in place p
// (schema-qualified): the read queries are written with "FROM prompts",
// "FROM usage_hourly", "FROM usage_daily", "FROM usage_hourly_user",
// "FROM usage_daily_user", "FROM usage_monthly_user" and "FROM usage_rollup_state",
// and nothing else names a data-plane table.
func placeSQL(q string, p Place) string {
	return strings.NewReplacer(
		" FROM prompts", " FROM "+p.table("prompts"),
		" FROM usage_hourly_user", " FROM "+p.table("usage_hourly_user"),
		" FROM usage_daily_user", " FROM "+p.table("usage_daily_user"),
		" FROM usage_monthly_user", " FROM "+p.table("usage_monthly_user"),
		" FROM usage_daily", " FROM "+p.table("usage_daily"),
		" FROM usage_rollup_state", " FROM "+p.table("usage_rollup_state"),
		" FROM usage_hourly", " FROM "+p.table("usage_hourly"),
	).Replace(q)
}

// PingTarget checks that database target name answers (/readyz reports
// each target; a target down concerns its tenants only and does not make
// the gateway unready). The first ping opens the target's pool.
func (s *Store) PingTarget(ctx context.Context, name string) error {
	pool, err := s.poolFor(ctx, Place{Target: name, Schema: "public"})
	if err != nil {
		return err
	}
	return pool.Ping(ctx)
}

// TargetNames lists the configured database targets, in name order.
func (s *Store) TargetNames() []string { return s.router.targetNames() }
