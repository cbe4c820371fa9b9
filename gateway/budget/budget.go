// Package budget enforces dollar budgets (store.Budget) across gateway
// replicas: a request's maximum cost is reserved at admission from every
// budget that applies to it, atomically in Redis, and reconciled with its
// actual cost when it ends (released when it fails). PostgreSQL is the
// source of truth: a counter Redis lost is rebuilt from the request log's
// costs before anything is admitted against it. Soft thresholds are
// claimed once per window in PostgreSQL and announced by webhook
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
	Source Source                // required
	Redis  redis.UniversalClient // required: budgets are shared by every replica
	Prefix string                // Redis key prefix; "": DefaultPrefix
	// TTL bounds how long a replica reuses an organization's budget list:
	// a budget set or removed applies everywhere within it. 0: DefaultTTL.
	TTL     time.Duration
	Timeout time.Duration // each PostgreSQL call (budget lists, rebuilds, alert claims); 0: DefaultTimeout
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
	mu      sync.Mutex
	lists   map[uuid.UUID]cached
	group   singleflight.Group
	alerted sync.Map // alertKey -> struct{}: thresholds this replica knows are claimed
	m       *enforcerMetrics
	// settles queues reconciliations for Run's workers: the answer does
	// not wait for a Redis round trip that only corrects the counters
	// (until it runs they hold the reservation, at least the cost).
	settles chan settlement
	running atomic.Bool
}

type settlement struct {
	ctx    context.Context
	res    Reservation
	actual store.MicroUSD
}

// settleQueue bounds the reconciliations waiting for Run's workers; a
// full queue makes Settle reconcile in the caller, never drop one.
const settleQueue = 4096

type cached struct {
	budgets []store.Budget
	expires time.Time
}

// maxCachedOrgs bounds the budget lists kept; past it the cache starts over.
const maxCachedOrgs = 100_000

// New returns an Enforcer.
func New(o Options) (*Enforcer, error) {
	if o.Source == nil || o.Redis == nil {
		return nil, errors.New("budget: Options.Source and Options.Redis are required")
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
	return &Enforcer{o: o, lists: map[uuid.UUID]cached{}, m: newEnforcerMetrics(reg), settles: make(chan settlement, settleQueue)}, nil
}

// Run reconciles queued settlements, two at a time, until ctx ends, then
// those still queued. Without Run, Settle reconciles in its caller.
func (e *Enforcer) Run(ctx context.Context) {
	e.running.Store(true)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case st := <-e.settles:
					e.settle(context.WithoutCancel(st.ctx), st.res, st.actual)
				}
			}
		})
	}
	wg.Wait()
	e.running.Store(false)
	for {
		select {
		case st := <-e.settles:
			e.settle(context.WithoutCancel(st.ctx), st.res, st.actual)
		default:
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
	org     uuid.UUID
	budgets []store.Budget
	keys    []string
	buckets []int64
	lows    []int64
	windows []time.Time // alert windows
	amount  store.MicroUSD
}

// ErrUnavailable: the budgets could not be checked (Redis or PostgreSQL
// unreachable). Budgets fail closed: the gateway answers 503.
var ErrUnavailable = errors.New("budgets unavailable")

// Reserve sets r.Max aside from every budget that applies to r, or from
// none if one of them would go over (or is used up).
func (e *Enforcer) Reserve(ctx context.Context, r Request) (Decision, Reservation, error) {
	all, err := e.budgetsFor(ctx, r.Org)
	if err != nil {
		return Decision{}, Reservation{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	res := Reservation{org: r.Org, amount: max(r.Max, 0)}
	for _, b := range all {
		if (b.KeyID == nil || *b.KeyID == r.Key) && (b.EndUser == nil || *b.EndUser == r.EndUser) {
			res.budgets = append(res.budgets, b)
		}
	}
	if len(res.budgets) == 0 {
		return Decision{}, Reservation{}, nil
	}
	now := e.o.Now()
	args := []any{int64(res.amount)}
	for _, b := range res.budgets {
		bucket, low, ttl, aw := slot(b.Window, now)
		res.keys = append(res.keys, e.key(b))
		res.buckets, res.lows, res.windows = append(res.buckets, bucket), append(res.lows, low), append(res.windows, aw)
		args = append(args, int64(b.Limit), low, strconv.FormatInt(bucket, 10), ttl.Milliseconds())
	}
	for attempt := 0; ; attempt++ {
		reply, err := e.run(ctx, reserveScript, res.keys, args)
		if err != nil {
			return Decision{}, Reservation{}, err
		}
		switch reply[0] {
		case 1:
			return e.decide(res.budgets, reply[1:], true, 0), res, nil
		case 0:
			refusing := int(reply[len(reply)-1]) - 1
			e.m.refused.WithLabelValues(res.budgets[refusing].Level()).Inc()
			return e.decide(res.budgets, reply[1:len(reply)-1], false, refusing), Reservation{}, nil
		}
		if attempt > 0 {
			return Decision{}, Reservation{}, fmt.Errorf("%w: counters lost again while being rebuilt", ErrUnavailable)
		}
		for _, i := range reply[1:] {
			if err := e.rebuild(ctx, res.budgets[i-1], res.keys[i-1], now); err != nil {
				return Decision{}, Reservation{}, err
			}
		}
	}
}

// decide reads a reply's spends: allowed, the tightest budget (least
// left); refused, the refusing one.
func (e *Enforcer) decide(bs []store.Budget, spent []int64, allowed bool, refusing int) Decision {
	pick := refusing
	if allowed {
		for i := range bs {
			if int64(bs[i].Limit)-spent[i] < int64(bs[pick].Limit)-spent[pick] {
				pick = i
			}
		}
	}
	b := bs[pick]
	return Decision{Applies: true, Allowed: allowed, Remaining: max(b.Limit-store.MicroUSD(spent[pick]), 0),
		Limit: b.Limit, Level: b.Level(), Window: b.Window}
}

// Settle reconciles res with the request's actual cost: the difference
// goes to every budget it reserved from (a failed request's 0 gives the
// whole reservation back), then the soft thresholds crossed are
// announced. It runs after the answer.
func (e *Enforcer) Settle(ctx context.Context, res Reservation, actual store.MicroUSD) {
	if len(res.keys) == 0 {
		return
	}
	if e.running.Load() {
		select {
		case e.settles <- settlement{ctx, res, actual}:
			return
		default: // full: reconcile here
		}
	}
	e.settle(context.WithoutCancel(ctx), res, actual)
}

func (e *Enforcer) settle(ctx context.Context, res Reservation, actual store.MicroUSD) {
	delta := int64(actual - res.amount)
	alerts := false
	for _, b := range res.budgets {
		alerts = alerts || len(b.AlertAt) > 0
	}
	if delta == 0 && !alerts {
		return
	}
	args := []any{delta}
	for i := range res.keys {
		args = append(args, res.lows[i], strconv.FormatInt(res.buckets[i], 10))
	}
	spent, err := e.run(ctx, settleScript, res.keys, args)
	if err != nil {
		e.o.Log.Warn("budget spend not reconciled", zap.String("org", res.org.String()), zap.Int64("delta_micro_usd", delta), zap.Error(err))
		return
	}
	for i, b := range res.budgets {
		for _, p := range b.AlertAt {
			if i < len(spent) && spent[i]*1000 >= int64(b.Limit)*int64(p) {
				e.alert(ctx, b, res.windows[i], p, store.MicroUSD(spent[i]))
			}
		}
	}
}

// run calls a script within the timeout and reads its integer reply.
func (e *Enforcer) run(ctx context.Context, s *redis.Script, keys []string, args []any) ([]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, e.o.RedisTimeout)
	defer cancel()
	v, err := s.Run(ctx, e.o.Redis, keys, args...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if len(v) == 0 {
		return nil, fmt.Errorf("%w: empty reply", ErrUnavailable)
	}
	return v, nil
}

// rebuild recreates b's lost counter from the request log: the cost of
// its rows since its window started. Rows still queued by a writer (this
// replica's or another's) and reservations in flight when Redis lost the
// counter are not in it: the spend may run short by that much, once.
func (e *Enforcer) rebuild(ctx context.Context, b store.Budget, key string, now time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, e.o.Timeout)
	defer cancel()
	spent, err := e.o.Source.BudgetSpend(ctx, b, b.Window.Start(now), now.Add(time.Second))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	bucket, _, ttl, _ := slot(b.Window, now)
	if err := initScript.Run(ctx, e.o.Redis, []string{key}, strconv.FormatInt(bucket, 10), int64(spent), ttl.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	e.m.rebuilt.Inc()
	return nil
}

// key is b's counter: every budget of one organization in one hash slot.
func (e *Enforcer) key(b store.Budget) string {
	return e.o.Prefix + ":{" + b.OrgID.String() + "}:" + b.ID.String()
}

// budgetsFor returns org's budgets, cached for TTL; concurrent misses of
// one organization share one read.
func (e *Enforcer) budgetsFor(ctx context.Context, org uuid.UUID) ([]store.Budget, error) {
	now := time.Now()
	e.mu.Lock()
	c, ok := e.lists[org]
	e.mu.Unlock()
	if ok && now.Before(c.expires) {
		return c.budgets, nil
	}
	v, err, _ := e.group.Do(org.String(), func() (any, error) {
		ctx, cancel := context.WithTimeout(ctx, e.o.Timeout)
		defer cancel()
		bs, err := e.o.Source.BudgetsFor(ctx, org)
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
		return nil, err
	}
	return v.([]store.Budget), nil
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
	refused *prometheus.CounterVec // level
	alerts  *prometheus.CounterVec // level, threshold
	rebuilt prometheus.Counter
}

func newEnforcerMetrics(reg prometheus.Registerer) *enforcerMetrics {
	m := &enforcerMetrics{
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulkhead_budget_refused_total", Help: "Requests refused (429 insufficient_quota) by a dollar budget, by its level (organization, key, user, key+user).",
		}, []string{"level"}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulkhead_budget_alerts_total", Help: "Budget soft thresholds reached (once per budget, window and threshold, across replicas), by level and threshold (fraction of the limit).",
		}, []string{"level", "threshold"}),
		rebuilt: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bulkhead_budget_counters_rebuilt_total", Help: "Budget counters Redis had lost, rebuilt from the request log in PostgreSQL.",
		}),
	}
	reg.MustRegister(m.refused, m.alerts, m.rebuilt)
	return m
}
