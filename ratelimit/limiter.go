package ratelimit

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// ErrUnavailable is returned, wrapped, by Allow and Charge in FailClosed
// mode while Redis cannot be reached; the gateway answers 503.
var ErrUnavailable = errors.New("ratelimit: redis unavailable")

// FailMode is what a Limiter does while Redis is unreachable.
type FailMode int

const (
	// FailLocal decides with this instance's in-process limiter, which
	// admits this replica's share of what Redis last showed left of each
	// budget (see Limiter.Run and the package doc for the bound).
	FailLocal FailMode = iota
	// FailClosed makes Allow, Reserve and Settle return ErrUnavailable.
	FailClosed
)

func (m FailMode) String() string {
	switch m {
	case FailLocal:
		return "local"
	case FailClosed:
		return "closed"
	}
	return "FailMode(" + strconv.Itoa(int(m)) + ")"
}

// Defaults of Options, applied by New to zero (or negative) fields.
const (
	DefaultPrefix       = "bulkhead:rl"
	DefaultTimeout      = 100 * time.Millisecond
	DefaultCooldown     = time.Second
	DefaultLocalMaxKeys = 100_000
	DefaultHeartbeat    = time.Second
)

// Options configure a Limiter. Every zero field takes its default.
type Options struct {
	// Prefix starts every Redis key: Prefix + ":{" + key + "}:r" for the
	// request budget and ":t" for the token budget; the braces are a Redis
	// Cluster hash tag, so both budgets of a key share a slot. The prefix
	// should not contain braces. Default DefaultPrefix.
	Prefix string
	// Timeout bounds each Redis call (context.WithTimeout on the caller's
	// context). The client must honour context deadlines
	// (redis.Options.ContextTimeoutEnabled), or a stalled Redis blocks for
	// the client's ReadTimeout instead; New logs a warning if it does not.
	// Default DefaultTimeout.
	Timeout time.Duration
	// FailMode is what happens while Redis is unreachable. Default
	// FailLocal.
	FailMode FailMode
	// Cooldown is how long, after a Redis error or timeout, the Limiter
	// stops calling Redis (a circuit breaker), so that a dead or slow Redis
	// does not add its timeout to every request. Then one call probes Redis
	// while the others still fall back; its success closes the breaker.
	// Default DefaultCooldown.
	Cooldown time.Duration
	// LocalMaxKeys bounds the keys the local limiter remembers (the
	// fallback's state and the last Redis state of each key it seeds from).
	// Default DefaultLocalMaxKeys.
	LocalMaxKeys int
	// ReplicaID names this instance in the heartbeat set (see Run); it
	// must differ between replicas sharing a Prefix. Default: random.
	ReplicaID string
	// Heartbeat is how often Run reports this instance alive; a replica is
	// counted while its last report is less than three heartbeats old.
	// Default DefaultHeartbeat.
	Heartbeat time.Duration
	// Log receives one warning when decisions switch from Redis to the
	// fallback and one info when they return. Default: no logging.
	Log *zap.Logger
	// Lease turns on lease mode for request budgets: each instance takes
	// request units from Redis a lease at a time (LeaseFraction of the
	// Burst, at least 1) and admits them locally, so that a busy key
	// costs a round trip per lease rather than per request, while the
	// replicas together still never admit more than the budget. Unused
	// leased units are dropped after at most a second (under-admission,
	// at most n-1 units per replica per lease). Calls with a token limit
	// and budgets with a Burst below 2/LeaseFraction are decided per
	// request as without leases. See lease.go for the exact semantics.
	// Default false.
	Lease bool
	// Now is the local limiter's clock, for tests. It never affects Redis
	// decisions, which use Redis TIME. Default time.Now.
	Now func() time.Time
}

// rediser is what a Limiter needs of a Redis client: running scripts
// (EVALSHA, falling back to EVAL).
type rediser interface {
	Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd
	EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd
	EvalRO(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd
	EvalShaRO(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd
	ScriptExists(ctx context.Context, hashes ...string) *redis.BoolSliceCmd
	ScriptLoad(ctx context.Context, script string) *redis.StringCmd
}

var (
	_ rediser = (*redis.Client)(nil)
	_ rediser = (*redis.ClusterClient)(nil)
	_ rediser = (redis.UniversalClient)(nil)
)

// Limiter enforces per-key request and token budgets. It is safe for
// concurrent use and needs no Close; its one goroutine is Run, which the
// owner runs for as long as it uses the Limiter.
type Limiter struct {
	rdb       rediser // nil: single-instance mode
	prefix    string
	id        string // this replica in the heartbeat set
	heartbeat time.Duration
	// replicas is how many replicas the last heartbeat saw alive, at
	// least 1: the local fallback admits 1/replicas of each budget.
	replicas atomic.Int64
	timeout  time.Duration
	cooldown time.Duration
	failMode FailMode
	log      *zap.Logger
	local    *local
	leases   *leases   // nil unless Options.Lease
	start    time.Time // origin of the breaker's monotonic clock

	// openUntil is 0 while the breaker is closed, otherwise the time
	// (ns since start) until which Redis is not called.
	openUntil atomic.Int64
	degraded  atomic.Bool // decisions currently come from the fallback
	downSince atomic.Int64

	redisDecisions atomic.Uint64
	localDecisions atomic.Uint64
	redisErrors    atomic.Uint64
	fallbacks      atomic.Uint64
	recoveries     atomic.Uint64
	leaseDecisions atomic.Uint64
	leasesTaken    atomic.Uint64
}

// New returns a Limiter sharing its budgets through rdb, or, with a nil
// rdb, a single-instance Limiter that decides in process (Source "local").
func New(rdb redis.UniversalClient, opts Options) *Limiter {
	if isNilClient(rdb) {
		return newLimiter(nil, opts)
	}
	l := newLimiter(rdb, opts)
	if !contextTimeouts(rdb) {
		l.log.Warn("ratelimit: the Redis client ignores context deadlines (ContextTimeoutEnabled is false); a stalled Redis will delay requests by its ReadTimeout, not by the limiter's timeout",
			zap.Duration("timeout", l.timeout))
	}
	return l
}

func newLimiter(rdb rediser, opts Options) *Limiter {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Cooldown <= 0 {
		opts.Cooldown = DefaultCooldown
	}
	if opts.LocalMaxKeys <= 0 {
		opts.LocalMaxKeys = DefaultLocalMaxKeys
	}
	if opts.ReplicaID == "" {
		opts.ReplicaID = rand.Text()
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = DefaultHeartbeat
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	var ls *leases
	if opts.Lease && rdb != nil {
		ls = newLeases(opts.LocalMaxKeys)
	}
	l := &Limiter{
		leases:    ls,
		rdb:       rdb,
		prefix:    opts.Prefix,
		id:        opts.ReplicaID,
		heartbeat: opts.Heartbeat,
		timeout:   opts.Timeout,
		cooldown:  opts.Cooldown,
		failMode:  opts.FailMode,
		log:       opts.Log,
		local:     newLocal(opts.LocalMaxKeys, opts.Now),
		start:     time.Now(),
	}
	l.replicas.Store(1)
	return l
}

func isNilClient(rdb redis.UniversalClient) bool {
	switch c := rdb.(type) {
	case nil:
		return true
	case *redis.Client:
		return c == nil
	case *redis.ClusterClient:
		return c == nil
	case *redis.Ring:
		return c == nil
	}
	return false
}

// contextTimeouts reports whether rdb applies context deadlines to socket
// reads; true when it cannot tell.
func contextTimeouts(rdb redis.UniversalClient) bool {
	switch c := rdb.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	}
	return true
}

// Allow decides whether key may make one more request: it admits when the
// request budget req has a unit left and the token budget tok, unless
// unlimited, has at least one token left. An admitted request spends one
// request unit; tokens are only checked here: Reserve sets the request's
// estimate aside once its body is known, and Settle reconciles it with the
// usage after the response. A rejected request spends nothing, so retries
// of a rejected request are not counted. With both limits unlimited it
// admits without any call (Source "none").
//
// key identifies the budget holder (an API key id, not the secret); it is
// used in Redis keys and is copied if retained.
//
// ctx bounds the Redis call together with Options.Timeout. If ctx is done,
// Allow returns its error, wrapped, without deciding. Otherwise a Redis
// failure falls back per Options.FailMode: FailLocal decides locally and
// returns no error; FailClosed returns an error wrapping ErrUnavailable.
// Whenever the error is non-nil the Decision is not Allowed and has Source
// "none".
func (l *Limiter) Allow(ctx context.Context, key string, req, tok Limit) (Decision, error) {
	if req.IsZero() && tok.IsZero() {
		return Decision{Allowed: true, Source: SourceNone}, nil
	}
	if l.rdb == nil {
		l.localDecisions.Add(1)
		return l.local.allow(key, req, tok, 1), nil
	}
	if err := ctx.Err(); err != nil {
		return Decision{Source: SourceNone}, fmt.Errorf("ratelimit: %w", err)
	}
	if l.leases != nil && tok.IsZero() {
		if n := leaseSize(req); n > 1 {
			if d, handled, err := l.allowLease(ctx, key, req, n); handled {
				return d, err
			}
		}
	}
	if d, done, err := l.viaRedis(ctx, func() (Decision, error) { return l.allowRedis(ctx, key, req, tok) }); done {
		return d, err
	}
	return l.local.allow(key, req, tok, l.share()), nil
}

// viaRedis makes a decision through Redis with call while the breaker
// allows it. done is false when the caller must decide locally instead
// (Redis unavailable and fail-open); otherwise d and err are the answer:
// Redis's decision, the caller's own cancellation (which says nothing
// about Redis), or ErrUnavailable when failing closed.
func (l *Limiter) viaRedis(ctx context.Context, call func() (Decision, error)) (d Decision, done bool, err error) {
	if use, probe := l.useRedis(); use {
		d, err := call()
		if err == nil {
			l.redisOK()
			l.redisDecisions.Add(1)
			return d, true, nil
		}
		if ctx.Err() != nil {
			l.probeAborted(probe)
			return Decision{Source: SourceNone}, true, fmt.Errorf("ratelimit: %w", ctx.Err())
		}
		l.redisFailed(err)
		if l.failMode == FailClosed {
			return Decision{Source: SourceNone}, true, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
	} else if l.failMode == FailClosed {
		return Decision{Source: SourceNone}, true, ErrUnavailable
	}
	l.localDecisions.Add(1)
	return Decision{}, false, nil
}

// Reserve sets tokens aside from key's token budget tok for a request that
// Allow admitted (with the same req and tok), before it is forwarded: the
// request's estimate, its prompt and the most it may generate. It admits
// when they fit on top of what is spent and set aside; a reservation larger
// than tok's Burst never fits (the caller should say so: retrying cannot
// help). A rejection sets nothing aside and gives back the request unit
// Allow spent, so a request refused for tokens has spent nothing. Because
// tokens are set aside at admission, concurrent requests cannot together
// take more than the budget; Settle later charges the difference between
// the estimate and the usage.
//
// The Decision carries only the token Window; when Allowed, its Reservation
// must reach Settle. With tok unlimited or tokens <= 0 it admits without
// any call (Source "none"). ctx and failures are as for Allow.
func (l *Limiter) Reserve(ctx context.Context, key string, req, tok Limit, tokens int) (Decision, error) {
	if tok.IsZero() || tokens <= 0 {
		return Decision{Allowed: true, Source: SourceNone}, nil
	}
	if l.rdb == nil {
		l.localDecisions.Add(1)
		return l.local.reserve(key, req, tok, tokens, 1), nil
	}
	if err := ctx.Err(); err != nil {
		return Decision{Source: SourceNone}, fmt.Errorf("ratelimit: %w", err)
	}
	if d, done, err := l.viaRedis(ctx, func() (Decision, error) { return l.reserveRedis(ctx, key, req, tok, tokens) }); done {
		return d, err
	}
	return l.local.reserve(key, req, tok, tokens, l.share()), nil
}

// Settle ends a request's reservation r (from Reserve; the zero
// Reservation if none was made) with the tokens it used, as the provider
// reported them: it charges used - r.Tokens to key's token budget tok in
// one atomic step, so a request that used less than it reserved gives the
// rest back and one that used more takes it, past empty if need be (debt,
// which Allow rejects until it is repaid at tok's rate). A request that
// failed settles with used 0, giving its whole reservation back. A
// reservation is settled where it was made: in Redis, or in this
// instance's local limiter for one made during an outage. Settle does
// nothing when tok is unlimited or there is nothing to reconcile.
//
// ctx bounds the Redis call together with Options.Timeout; settle with a
// context that outlives the client's request (context.WithoutCancel of a
// server-owned context) so that usage is not lost when the client goes.
// While Redis is unavailable the difference goes to the local limiter and
// Settle returns nil in FailLocal mode; in FailClosed mode it returns an
// error wrapping ErrUnavailable and the difference is not counted.
func (l *Limiter) Settle(ctx context.Context, key string, tok Limit, r Reservation, used int) error {
	delta := max(used, 0) - max(r.Tokens, 0)
	if tok.IsZero() || delta == 0 {
		return nil
	}
	if l.rdb == nil {
		l.local.charge(key, tok, float64(delta))
		return nil
	}
	if r.Source == SourceLocal {
		l.local.charge(key, tok, float64(delta)*l.share())
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ratelimit: %w", err)
	}
	if use, probe := l.useRedis(); use {
		err := l.chargeRedis(ctx, key, tok, delta)
		if err == nil {
			l.redisOK()
			return nil
		}
		if ctx.Err() != nil {
			l.probeAborted(probe)
			return fmt.Errorf("ratelimit: %w", ctx.Err())
		}
		l.redisFailed(err)
		if l.failMode == FailClosed {
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
	} else if l.failMode == FailClosed {
		return ErrUnavailable
	}
	// This replica's spending counts for its share; a refund of tokens
	// Redis had set aside counts once, as they did in the seeded level.
	units := float64(delta)
	if delta > 0 {
		units *= l.share()
	}
	l.local.charge(key, tok, units)
	return nil
}

// Charge spends tokens from key's token budget tok after a response that
// reserved nothing: Settle with the zero Reservation. It does nothing when
// tok is unlimited or tokens <= 0.
func (l *Limiter) Charge(ctx context.Context, key string, tok Limit, tokens int) error {
	if tokens <= 0 {
		return nil
	}
	return l.Settle(ctx, key, tok, Reservation{}, tokens)
}

// Stats are a Limiter's counters since New.
type Stats struct {
	// RedisDecisions and LocalDecisions count Allow and Reserve decisions by source
	// (decisions without any limit are not counted).
	RedisDecisions, LocalDecisions uint64
	// RedisErrors counts failed Redis calls (errors and timeouts, not
	// the caller's cancellations), by Allow and Charge.
	RedisErrors uint64
	// Fallbacks counts switches from Redis to the fallback, Recoveries
	// switches back.
	Fallbacks, Recoveries uint64
	// LocalEvictions counts local entries dropped while their budgets were
	// still in use, because the local limiter was full.
	LocalEvictions uint64
	// LeaseDecisions counts the RedisDecisions made from this instance's
	// leases without a call (Options.Lease); Leases counts the lease
	// requests Redis answered.
	LeaseDecisions, Leases uint64
	// Replicas is how many replicas the last heartbeat saw alive (1 before
	// the first, and without Run); the local fallback admits 1/Replicas of
	// each budget.
	Replicas int
}

// Stats returns the counters. Safe for concurrent use.
func (l *Limiter) Stats() Stats {
	return Stats{
		RedisDecisions: l.redisDecisions.Load(),
		LocalDecisions: l.localDecisions.Load(),
		RedisErrors:    l.redisErrors.Load(),
		Fallbacks:      l.fallbacks.Load(),
		Recoveries:     l.recoveries.Load(),
		LocalEvictions: l.local.evictions.Load(),
		LeaseDecisions: l.leaseDecisions.Load(),
		Leases:         l.leasesTaken.Load(),
		Replicas:       int(l.replicas.Load()),
	}
}

// --- circuit breaker ---

func (l *Limiter) mono() int64 { return int64(time.Since(l.start)) }

// useRedis reports whether this call may use Redis: the breaker is closed,
// or its cooldown is over and this call won the right to probe (probe; the
// others keep falling back until the probe succeeds or the next cooldown
// ends).
func (l *Limiter) useRedis() (use, probe bool) {
	until := l.openUntil.Load()
	if until == 0 {
		return true, false
	}
	now := l.mono()
	if now >= until && l.openUntil.CompareAndSwap(until, now+int64(l.cooldown)) {
		return true, true
	}
	return false, false
}

// probeAborted lets the next call probe at once when a probe ended because
// its caller went away, which says nothing about Redis.
func (l *Limiter) probeAborted(probe bool) {
	if !probe {
		return
	}
	if until := l.openUntil.Load(); until != 0 {
		l.openUntil.CompareAndSwap(until, l.mono())
	}
}

func (l *Limiter) redisOK() {
	if l.openUntil.Load() != 0 {
		l.openUntil.Store(0)
	}
	if l.degraded.Load() && l.degraded.CompareAndSwap(true, false) {
		l.recoveries.Add(1)
		l.log.Info("ratelimit: Redis is back; decisions are shared again",
			zap.Duration("degraded_for", time.Duration(l.mono()-l.downSince.Load())))
	}
}

func (l *Limiter) redisFailed(err error) {
	l.redisErrors.Add(1)
	l.openUntil.Store(l.mono() + int64(l.cooldown))
	if l.degraded.CompareAndSwap(false, true) {
		l.downSince.Store(l.mono())
		l.fallbacks.Add(1)
		msg := "ratelimit: Redis unavailable; deciding with the local limiter"
		if l.failMode == FailClosed {
			msg = "ratelimit: Redis unavailable; rejecting requests (fail closed)"
		}
		l.log.Warn(msg, zap.Error(err), zap.Duration("retry_every", l.cooldown))
	}
}

// --- Redis ---

func (l *Limiter) keys(key string) [2]string {
	return [2]string{l.prefix + ":{" + key + "}:r", l.prefix + ":{" + key + "}:t"}
}

func (l *Limiter) allowRedis(ctx context.Context, key string, req, tok Limit) (Decision, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	keys := l.keys(key)
	ri, ti := req.interval(time.Microsecond), tok.interval(time.Microsecond)
	rb, tb := req.burst(), tok.burst()
	reply, err := allowScript.Run(ctx, l.rdb, keys[:], ri, rb, ti, tb).Result()
	if err != nil {
		return Decision{}, fmt.Errorf("ratelimit: evaluating script: %w", err)
	}
	var v [6]int64
	if err := int64s(reply, v[:]); err != nil {
		return Decision{}, fmt.Errorf("ratelimit: evaluating script: %w", err)
	}
	d := Decision{
		Allowed:    v[0] == 1,
		RetryAfter: micros(v[5]),
		Source:     SourceRedis,
	}
	if ri > 0 {
		d.Requests = Window{Limit: rb, Remaining: int(v[1]), Reset: micros(v[2])}
	}
	if ti > 0 {
		d.Tokens = Window{Limit: tb, Remaining: int(v[3]), Reset: micros(v[4])}
	}
	l.local.remember(key, req, levelOf(v[2], ri), tok, levelOf(v[4], ti))
	return d, nil
}

func (l *Limiter) reserveRedis(ctx context.Context, key string, req, tok Limit, tokens int) (Decision, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	keys := l.keys(key)
	ri, ti, tb := req.interval(time.Microsecond), tok.interval(time.Microsecond), tok.burst()
	reply, err := reserveScript.Run(ctx, l.rdb, keys[:], ri, ti, tb, tokens).Result()
	if err != nil {
		return Decision{}, fmt.Errorf("ratelimit: evaluating reserve script: %w", err)
	}
	var v [4]int64
	if err := int64s(reply, v[:]); err != nil {
		return Decision{}, fmt.Errorf("ratelimit: evaluating reserve script: %w", err)
	}
	d := Decision{
		Allowed:    v[0] == 1,
		Tokens:     Window{Limit: tb, Remaining: int(v[1]), Reset: micros(v[2])},
		RetryAfter: micros(v[3]),
		Source:     SourceRedis,
	}
	if d.Allowed {
		d.Reservation = Reservation{Tokens: tokens, Source: SourceRedis}
	}
	l.local.remember(key, Limit{}, 0, tok, levelOf(v[2], ti))
	return d, nil
}

func (l *Limiter) chargeRedis(ctx context.Context, key string, tok Limit, tokens int) error {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	keys := l.keys(key)
	reply, err := chargeScript.Run(ctx, l.rdb, keys[1:], tok.interval(time.Microsecond), tokens).Result()
	if err != nil {
		return fmt.Errorf("ratelimit: evaluating charge script: %w", err)
	}
	level, ok := reply.(int64)
	if !ok {
		return fmt.Errorf("ratelimit: evaluating charge script: reply is %T, want an integer", reply)
	}
	l.local.remember(key, Limit{}, 0, tok, float64(level))
	return nil
}

// levelOf is the level of a budget whose reset, in µs, a script reported.
func levelOf(resetMicros int64, intervalMicros float64) float64 {
	if intervalMicros == 0 || resetMicros <= 0 {
		return 0
	}
	return float64(resetMicros) / intervalMicros
}

// int64s fills dst from a script's array reply of integers.
func int64s(reply any, dst []int64) error {
	vals, ok := reply.([]any)
	if !ok {
		return fmt.Errorf("reply is %T, want an array", reply)
	}
	if len(vals) != len(dst) {
		return fmt.Errorf("reply has %d elements, want %d", len(vals), len(dst))
	}
	for i, v := range vals {
		n, ok := v.(int64)
		if !ok {
			return fmt.Errorf("reply element %d is %T, want an integer", i, v)
		}
		dst[i] = n
	}
	return nil
}

func micros(us int64) time.Duration {
	if us <= 0 {
		return 0
	}
	if us >= int64(maxDuration/time.Microsecond) {
		return maxDuration
	}
	return time.Duration(us) * time.Microsecond
}
