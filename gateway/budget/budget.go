// Package budget enforces dollar budgets (store.Budget) across gateway
// replicas: a request's maximum cost is reserved at admission from every
// budget that applies to it, and reconciled with its actual cost when it
// ends (released when it fails). A shared counter per budget counts every
// replica's spend: Redis's (the default), or PostgreSQL's (store's
// budget_counters) without Redis and while Redis is unreachable. Each
// replica leases dollars from it a chunk at a time and spends them
// locally, so that most requests cost no round trip (see lease.go for
// the semantics, the fallback and the bound; counter.go for the two
// counters). PostgreSQL is the source of truth: a counter lost (or
// left behind by the other counter's use) is rebuilt from the request
// log's costs before anything is admitted against it. Soft thresholds
// are claimed once per window in PostgreSQL and announced by webhook
// (Notifier) and metric.
package budget

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/bulkheadhq/bulkhead/gateway/internal/batch"
	"github.com/bulkheadhq/bulkhead/store"
)

// Source is the control plane's budgets and the request log's spend
// (store.Store).
type Source interface {
	BudgetsFor(ctx context.Context, org uuid.UUID) ([]store.Budget, error)
	BudgetSpend(ctx context.Context, b store.Budget, since, until time.Time) (store.MicroUSD, error)
	ClaimBudgetAlert(ctx context.Context, org, budget uuid.UUID, windowStart time.Time, permille int) (bool, error)
}

var _ Source = (*store.Store)(nil)

// Defaults of Options.
const (
	DefaultPrefix  = "bulkhead:budget"
	DefaultTTL     = 10 * time.Second
	DefaultTimeout = 2 * time.Second
)

// Options configure an Enforcer.
type Options struct {
	Source Source // required
	// Redis holds the counters the replicas share; nil: Counters alone.
	// At least one of Redis and Counters is required.
	Redis redis.UniversalClient
	// Counters is PostgreSQL's counters (store.Store): the only ones
	// without Redis, the fallback while Redis is unreachable (see
	// lease.go). nil: none; with Redis unreachable, budgets fail closed.
	Counters Counters
	Prefix   string // Redis key prefix; "": DefaultPrefix
	// TTL bounds how long a replica reuses an organization's budget list:
	// a budget set or removed applies everywhere within it. 0: DefaultTTL.
	TTL     time.Duration
	Timeout time.Duration // each PostgreSQL call (budget lists, rebuilds, alert claims, counters); 0: DefaultTimeout
	// RedisTimeout bounds each Redis call (BULKHEAD_REDIS_TIMEOUT); 0:
	// Timeout.
	RedisTimeout time.Duration
	Notifier     *Notifier   // soft-threshold webhooks; nil: metric only
	Log          *zap.Logger // nil: none
	Metrics      prometheus.Registerer
	Now          func() time.Time // nil: time.Now
}

// Enforcer reserves and settles budgets. It is safe for concurrent use.
type Enforcer struct {
	o       Options
	redis   *redisCounter // nil: no Redis
	pg      *pgCounter    // nil: no PostgreSQL counters
	mu      sync.Mutex
	lists   map[uuid.UUID]cached
	leases  map[uuid.UUID]*orgLeases // guarded by mu
	group   singleflight.Group
	alerted sync.Map // alertKey -> struct{}: thresholds this replica knows are claimed
	m       *enforcerMetrics
	// jobs queues Redis corrections (leases given back, costs beyond a
	// reservation) and alert claims for Run's workers: the answer does
	// not wait for a round trip that only corrects the counters.
	jobs    chan func(context.Context)
	running atomic.Bool
	// downUntil (unix ns, 0: closed) is set when a Redis call fails:
	// until then requests no lease covers fail at once instead of each
	// waiting for Redis; the first one after it probes.
	downUntil atomic.Int64

	// batch gathers first reads of budget lists when Options.Source is a
	// BatchSource (batch.go); nil: one read per organization.
	batch *batch.Batcher[uuid.UUID, []store.Budget]
}

// redisCooldown is how long Redis is left alone after a failure.
const redisCooldown = time.Second

// fallbackTTL is how long a PostgreSQL counter lives unused while it is
// Redis's fallback (lease.go): one left idle longer is built again from
// the request log.
const fallbackTTL = 30 * time.Second

// jobQueue bounds the jobs waiting for Run's workers; a full queue makes
// the caller run its job, never drops one.
const jobQueue = 4096

type cached struct {
	budgets []store.Budget
	expires time.Time
}

// maxCachedOrgs bounds the budget lists kept; past it the cache starts over.
const maxCachedOrgs = 100_000

// New returns an Enforcer.
func New(o Options) (*Enforcer, error) {
	if o.Source == nil || o.Redis == nil && o.Counters == nil {
		return nil, errors.New("budget: Options.Source and one of Options.Redis and Options.Counters are required")
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.RedisTimeout <= 0 {
		o.RedisTimeout = o.Timeout
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	reg := o.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	e := &Enforcer{o: o, lists: map[uuid.UUID]cached{}, leases: map[uuid.UUID]*orgLeases{}, m: newEnforcerMetrics(reg),
		jobs: make(chan func(context.Context), jobQueue), batch: newBatch(o.Source, o.Timeout)}
	if o.Redis != nil {
		e.redis = &redisCounter{rdb: o.Redis, timeout: o.RedisTimeout}
	}
	if o.Counters != nil {
		e.pg = &pgCounter{c: o.Counters, timeout: o.Timeout}
		if o.Redis != nil {
			e.pg.maxTTL = fallbackTTL
		}
	}
	return e, nil
}

// Run runs queued corrections and alert claims, two at a time, and gives
// back leases left idle past their lifetime, until ctx ends; then it runs
// the jobs still queued and gives back every lease. Without Run, jobs run
// in their callers and idle leases stay held until a request of their
// organization asks Redis (or their window ends).
func (e *Enforcer) Run(ctx context.Context) {
	e.running.Store(true)
	bg := context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case job := <-e.jobs:
					job(bg)
				}
			}
		})
	}
	wg.Go(func() {
		t := time.NewTicker(leaseLifetime)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				e.giveBack(bg, e.o.Now(), false)
			}
		}
	})
	wg.Wait()
	e.running.Store(false)
	for {
		select {
		case job := <-e.jobs:
			job(bg)
		default:
			e.giveBack(bg, e.o.Now(), true)
			return
		}
	}
}

// Request is what a request asks of the budgets.
type Request struct {
	Org     uuid.UUID
	Key     uuid.UUID // uuid.Nil: a JWT caller (no key budget applies)
	EndUser string    // "": none (no end-user budget applies)
	Max     store.MicroUSD
}

// Decision is a reservation's outcome. Applies is false when no budget
// applies to the request (nothing else is then set).
type Decision struct {
	Applies bool
	Allowed bool
	// Remaining is what the tightest budget has left (after this
	// request's reservation when allowed), never below 0; Level and Limit
	// are that budget's (a refusal: the refusing budget's).
	Remaining store.MicroUSD
	Limit     store.MicroUSD
	Level     string
	Window    store.BudgetWindow
}

// Reservation is what Reserve set aside, for Settle. The zero value
// reserved nothing.
type Reservation struct {
	ol     *orgLeases
	parts  []part
	amount store.MicroUSD
}

// ErrUnavailable: the budgets could not be checked (Redis or PostgreSQL
// unreachable) and this replica's leases could not cover the request.
// Budgets fail closed: the gateway answers 503.
var ErrUnavailable = errors.New("budgets unavailable")

// Reserve sets r.Max aside from every budget that applies to r, or from
// none if one of them would go over (or is used up): from this replica's
// leases when they cover it, else in Redis (lease.go).
func (e *Enforcer) Reserve(ctx context.Context, r Request) (Decision, Reservation, error) {
	all, ol, err := e.budgetsFor(ctx, r.Org)
	if err != nil {
		return Decision{}, Reservation{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	n := 0
	for _, b := range all {
		if applies(b, r) {
			n++
		}
	}
	if n == 0 {
		return Decision{}, Reservation{}, nil
	}
	res := Reservation{ol: ol, amount: max(r.Max, 0), parts: make([]part, 0, n)}
	now := e.o.Now()
	for _, b := range all {
		if applies(b, r) {
			p := part{b: b}
			p.bucket, p.low, p.ttl, p.window = slot(b.Window, now)
			res.parts = append(res.parts, p)
		}
	}
	for rebuilt, tries := 0, 0; ; {
		ol.mu.Lock()
		if d, ok := ol.takeLocal(&res, now); ok {
			ol.mu.Unlock()
			e.m.leased.Inc()
			return d, res, nil
		}
		if ch := ol.fetch; ch != nil {
			ol.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return Decision{}, Reservation{}, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
			}
		}
		c := e.counterNow()
		if c == nil {
			ol.mu.Unlock()
			return Decision{}, Reservation{}, fmt.Errorf("%w: Redis failed less than %v ago", ErrUnavailable, redisCooldown)
		}
		ol.fetch = make(chan struct{})
		ol.mu.Unlock()
		d, ok, missing, lost, err := e.reserveShared(ctx, c, ol, &res, now)
		if e.redis != nil && c == counter(e.redis) {
			if err != nil && ctx.Err() == nil {
				e.downUntil.Store(time.Now().Add(redisCooldown).UnixNano())
				if e.pg != nil && tries < 4 {
					tries++
					continue // to PostgreSQL's counters
				}
			} else if err == nil {
				e.downUntil.Store(0)
			}
		}
		switch {
		case err != nil:
			return Decision{}, Reservation{}, err
		case len(missing) == 0 && ok:
			e.m.admitted(c)
			return d, res, nil
		case len(missing) == 0:
			return d, Reservation{}, nil
		case lost && e.redis != nil && c == counter(e.pg) && tries < 4:
			// A PostgreSQL counter this replica leased from is gone: closed
			// by a replica back on Redis (or idle past fallbackTTL). Probe
			// Redis now rather than open another.
			tries++
			e.downUntil.Store(1)
			continue
		case rebuilt == 2:
			return Decision{}, Reservation{}, fmt.Errorf("%w: counters lost again while being rebuilt", ErrUnavailable)
		}
		rebuilt++
		if err := e.rebuildAll(ctx, c, &res, missing, now); err != nil {
			if e.redis != nil && c == counter(e.redis) && e.pg != nil && ctx.Err() == nil && tries < 4 {
				e.downUntil.Store(time.Now().Add(redisCooldown).UnixNano())
				tries++
				continue // to PostgreSQL's counters
			}
			return Decision{}, Reservation{}, err
		}
	}
}

// rebuildAll rebuilds the counters of res's parts listed in missing.
func (e *Enforcer) rebuildAll(ctx context.Context, c counter, res *Reservation, missing []int, now time.Time) error {
	for _, i := range missing {
		if err := e.rebuild(ctx, c, res.parts[i].b, res.parts[i].ent.ref, now); err != nil {
			return err
		}
	}
	return nil
}

// counterNow is the counter to ask: Redis unless it failed less than
// redisCooldown ago (one caller then probes it), else PostgreSQL's; nil
// when neither may be asked.
func (e *Enforcer) counterNow() counter {
	if e.redis != nil && e.mayCallRedis() {
		return e.redis
	}
	if e.pg != nil {
		return e.pg
	}
	return nil
}

// applies reports whether b applies to r: its organization's budgets,
// its key's and its end user's.
func applies(b store.Budget, r Request) bool {
	return (b.KeyID == nil || *b.KeyID == r.Key) && (b.EndUser == nil || *b.EndUser == r.EndUser)
}

// mayCallRedis reports whether a request may call Redis: no failure
// within redisCooldown, or this caller is the one probe after it.
func (e *Enforcer) mayCallRedis() bool {
	until := e.downUntil.Load()
	if until == 0 {
		return true
	}
	now := time.Now().UnixNano()
	return now >= until && e.downUntil.CompareAndSwap(until, now+int64(redisCooldown))
}

// decide reads a reply's spends: allowed, the tightest budget (least
// left); refused, the refusing one.
func (e *Enforcer) decide(ps []part, spent []int64, allowed bool, refusing int) Decision {
	pick := refusing
	if allowed {
		for i := range ps {
			if int64(ps[i].b.Limit)-spent[i] < int64(ps[pick].b.Limit)-spent[pick] {
				pick = i
			}
		}
	}
	b := ps[pick].b
	return Decision{Applies: true, Allowed: allowed, Remaining: max(b.Limit-store.MicroUSD(spent[pick]), 0),
		Limit: b.Limit, Level: b.Level(), Window: b.Window}
}

// Settle reconciles res with the request's actual cost: what it reserved
// beyond the cost goes back to this replica's leases (a failed request's
// 0 gives the whole reservation back), a cost beyond it is taken from
// them or added in Redis, then the soft thresholds crossed are announced.
// It runs after the answer and does no I/O itself.
func (e *Enforcer) Settle(ctx context.Context, res Reservation, actual store.MicroUSD) {
	if len(res.parts) == 0 {
		return
	}
	e.settleLeases(res, actual)
}

// rebuild recreates b's lost counter from the request log: the cost of
// its rows since its window started. Rows still queued by a writer (this
// replica's or another's) and reservations in flight when Redis lost the
// counter are not in it: the spend may run short by that much, once.
func (e *Enforcer) rebuild(ctx context.Context, c counter, b store.Budget, r ref, now time.Time) error {
	sctx, cancel := context.WithTimeout(ctx, e.o.Timeout)
	defer cancel()
	spent, err := e.o.Source.BudgetSpend(sctx, b, b.Window.Start(now), now.Add(time.Second))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	bucket, _, ttl, _ := slot(b.Window, now)
	if err := c.init(ctx, r, bucket, int64(spent), ttl, newGeneration()); err != nil {
		return err
	}
	e.m.rebuilt.WithLabelValues(c.name()).Inc()
	return nil
}

// key is b's counter: every budget of one organization in one hash slot.
func (e *Enforcer) key(b store.Budget) string {
	return e.o.Prefix + ":{" + b.OrgID.String() + "}:" + b.ID.String()
}

// budgetsFor returns org's budgets, cached for TTL (concurrent misses of
// one organization share one read), and its leases.
func (e *Enforcer) budgetsFor(ctx context.Context, org uuid.UUID) ([]store.Budget, *orgLeases, error) {
	now := time.Now()
	e.mu.Lock()
	c, ok := e.lists[org]
	ol, later := e.leasesOf(org)
	e.mu.Unlock()
	e.queueAll(later)
	if ok && now.Before(c.expires) {
		return c.budgets, ol, nil
	}
	v, err, _ := e.group.Do(org.String(), func() (any, error) {
		ctx, cancel := context.WithTimeout(ctx, e.o.Timeout)
		defer cancel()
		bs, err := e.readBudgets(ctx, org)
		if err != nil {
			return nil, err
		}
		e.mu.Lock()
		if len(e.lists) >= maxCachedOrgs {
			clear(e.lists)
		}
		e.lists[org] = cached{budgets: bs, expires: time.Now().Add(e.o.TTL)}
		e.mu.Unlock()
		return bs, nil
	})
	if err != nil {
		return nil, nil, err
	}
	return v.([]store.Budget), ol, nil
}

// Forget drops org's cached budgets (after a change made here).
func (e *Enforcer) Forget(org uuid.UUID) {
	e.mu.Lock()
	delete(e.lists, org)
	e.mu.Unlock()
}

type alertKey struct {
	budget   uuid.UUID
	window   int64
	permille int
}

// alert announces that b reached permille of its limit in the window
// starting at window, if no replica has yet: the claim in PostgreSQL
// decides. This replica remembers claims (its own and others') so that
// later requests cost no round trip.
func (e *Enforcer) alert(ctx context.Context, b store.Budget, window time.Time, permille int, spent store.MicroUSD) {
	k := alertKey{b.ID, window.Unix(), permille}
	if _, done := e.alerted.Load(k); done {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, e.o.Timeout)
	defer cancel()
	claimed, err := e.o.Source.ClaimBudgetAlert(ctx, b.OrgID, b.ID, window, permille)
	if err != nil {
		e.o.Log.Warn("budget alert not recorded", zap.String("budget", b.ID.String()), zap.Error(err))
		return // tried again by a later request
	}
	e.alerted.Store(k, struct{}{})
	if !claimed {
		return
	}
	label := strconv.FormatFloat(float64(permille)/1000, 'f', -1, 64)
	e.m.alerts.WithLabelValues(b.Level(), label).Inc()
	if e.o.Notifier != nil {
		e.o.Notifier.Send(newAlert(b, window, permille, spent))
	}
}

type enforcerMetrics struct {
	leased    prometheus.Counter     // admissions from a lease
	fetched   prometheus.Counter     // admissions by Redis (with a new lease)
	fetchedPG prometheus.Counter     // admissions by PostgreSQL's counters
	refused   *prometheus.CounterVec // level
	alerts    *prometheus.CounterVec // level, threshold
	rebuilt   *prometheus.CounterVec // counter
}

// admitted counts an admission decided by c.
func (m *enforcerMetrics) admitted(c counter) {
	if _, pg := c.(*pgCounter); pg {
		m.fetchedPG.Inc()
		return
	}
	m.fetched.Inc()
}

func newEnforcerMetrics(reg prometheus.Registerer) *enforcerMetrics {
	decisions := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulkhead_budget_admissions_total", Help: "Requests admitted by dollar budgets, by where the decision was made: lease (this replica's lease, no I/O), redis or postgres (a round trip to the shared counters, which took a new lease).",
	}, []string{"source"})
	m := &enforcerMetrics{
		leased:    decisions.WithLabelValues("lease"),
		fetched:   decisions.WithLabelValues("redis"),
		fetchedPG: decisions.WithLabelValues("postgres"),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulkhead_budget_refused_total", Help: "Requests refused (429 insufficient_quota) by a dollar budget, by its level (organization, key, user, key+user).",
		}, []string{"level"}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulkhead_budget_alerts_total", Help: "Budget soft thresholds reached (once per budget, window and threshold, across replicas), by level and threshold (fraction of the limit).",
		}, []string{"level", "threshold"}),
		rebuilt: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulkhead_budget_counters_rebuilt_total", Help: "Budget counters built from the request log in PostgreSQL (lost by Redis, new, or PostgreSQL's fallback counters), by counter: redis or postgres.",
		}, []string{"counter"}),
	}
	reg.MustRegister(decisions, m.refused, m.alerts, m.rebuilt)
	return m
}
