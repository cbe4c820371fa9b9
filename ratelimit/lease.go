package ratelimit

import (
	"context"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Lease mode (Options.Lease) takes request units from a key's shared
// budget in Redis several at a time and hands them out locally, so that
// most admissions of a busy key cost no round trip.
//
// Semantics, for a request budget req with Burst b (only for calls whose
// token limit is unlimited; a call with a token limit uses the per-request
// script, as without leases):
//
//   - Lease size n = max(1, floor(b × LeaseFraction)), LeaseFraction =
//     1/64. With n = 1 (b < 128, e.g. PerMinute(60)) every request takes
//     the per-request script exactly as without leases.
//   - Otherwise, when this instance holds no unit for the key, one caller
//     runs leaseScript, which atomically spends k = min(n, units available
//     now) units of the budget in Redis (the level, i.e. the arrival time,
//     moves on by k intervals). The caller is admitted with one of them;
//     the k-1 others are admitted locally, without I/O or allocation, by
//     later calls on this instance. k = 0 rejects, with Redis's RetryAfter.
//   - Units are spent in Redis before they are admitted, so the replicas
//     together never admit more than the budget allows: the total stays
//     exact on the strict side. A leased unit is admitted later than Redis
//     counted it, by at most the lease lifetime below.
//   - A lease expires leaseLifetime = min(1s, n × Period/Rate) after it was
//     requested; its unused units are dropped, not returned (they stay
//     spent in Redis). So each replica may leave up to n-1 units of a
//     budget unused per lease lifetime: under-admission, never
//     over-admission. Changing a key's limit also drops its leased units.
//   - After Redis rejects a lease (k = 0) the instance rejects the key
//     locally until the RetryAfter Redis reported has passed: the shared
//     level can only be higher meanwhile, so no unit could be granted.
//   - Decision.Requests.Remaining of a leased admission is Redis's
//     remaining count when the lease was taken plus the units this
//     instance still holds: approximate between leases (other replicas'
//     spending and the refill are not seen). Reset is Redis's reset at
//     lease time less the time since; Limit is the Burst, as always.
//     Leased decisions have Source "redis".
//   - One caller per key and instance fetches a lease at a time; the
//     others wait for it (bounded by Options.Timeout, or their context)
//     and then take from it.
//   - A Redis failure while fetching a lease is handled as in Allow
//     (circuit breaker, then FailMode). Units already leased keep being
//     admitted while Redis is down: they were spent in Redis.
//
// Lease state is bounded like the local limiter: Options.LocalMaxKeys
// entries, sharded; entries holding no usable units are swept when a shard
// is full, otherwise an arbitrary one is dropped (its units unused).

// LeaseFraction is the part of a request budget's Burst taken from Redis
// in one lease; see Options.Lease.
const LeaseFraction = 1.0 / 64

// maxLeaseLifetime caps how long leased units may be held.
const maxLeaseLifetime = time.Second

// leaseSize is n, the units one lease asks for.
func leaseSize(req Limit) int {
	return max(1, int(float64(req.burst())*LeaseFraction))
}

// leaseLifetime is how long the units of a lease of n units may be used.
func leaseLifetime(req Limit, n int) time.Duration {
	per := float64(req.Period) / float64(req.Rate) * float64(n)
	if per >= float64(maxLeaseLifetime) {
		return maxLeaseLifetime
	}
	return time.Duration(per)
}

// leaseScript takes up to n units of a request budget at once.
//
//	KEYS[1] request budget
//	ARGV[1] request interval µs (> 0), ARGV[2] request burst, ARGV[3] n (>= 1)
//
// It spends k = min(n, remaining) units; k = 0 writes nothing. Reply, all
// integers:
//
//	{k, requests remaining, requests reset µs, retry after µs (when k = 0)}
var leaseScript = redis.NewScript(luaPrelude + `
local ri, rb, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local rl = level(KEYS[1], ri)
local k = remaining(rl, rb)
if k > n then k = n end
local wait = 0
if k > 0 then
  rl = rl + k
  store(KEYS[1], rl, ri)
else
  wait = shortfall(rl, rb) * ri
end
return {k, remaining(rl, rb), whole(rl * ri), whole(wait)}
`)

// leases is the lease state of a Limiter.
type leases struct {
	seed   maphash.Seed
	shards [localShards]leaseShard
}

type leaseShard struct {
	mu        sync.Mutex
	m         map[string]*leaseEntry
	limit     int
	nextSweep int64
	_         [32]byte
}

// leaseEntry is one key's lease; all fields are guarded by its shard's mu.
// Times are ns of Limiter.mono.
type leaseEntry struct {
	lim     Limit // the limit the state belongs to
	units   int   // leased units not yet admitted
	expires int64 // units are void from then on
	at      int64 // when the last lease was requested
	redis   int   // Redis's remaining count at that lease
	reset   time.Duration
	// deniedUntil: Redis granted nothing; no unit can be had before then.
	deniedUntil int64
	// fetch is non-nil while a caller fetches a lease; closed when done.
	fetch chan struct{}
}

func newLeases(maxKeys int) *leases {
	ls := &leases{seed: maphash.MakeSeed()}
	for i := range ls.shards {
		ls.shards[i].m = make(map[string]*leaseEntry)
		ls.shards[i].limit = max(1, (maxKeys+localShards-1)/localShards)
	}
	return ls
}

func (ls *leases) shard(key string) *leaseShard {
	return &ls.shards[maphash.String(ls.seed, key)%localShards]
}

// idle reports whether e holds nothing worth keeping at now.
func (e *leaseEntry) idle(now int64) bool {
	return e.fetch == nil && (e.units == 0 || now >= e.expires) && now >= e.deniedUntil
}

// insert adds a new entry for key; s.mu must be held.
func (s *leaseShard) insert(key string, now int64) *leaseEntry {
	if len(s.m) >= s.limit {
		if now >= s.nextSweep {
			s.nextSweep = now + int64(sweepEvery)
			for k, e := range s.m {
				if e.idle(now) {
					delete(s.m, k)
				}
			}
		}
		if len(s.m) >= s.limit {
			for k := range s.m {
				// A fetcher still holds a dropped entry; its result is
				// simply lost.
				delete(s.m, k)
				break
			}
		}
	}
	e := &leaseEntry{}
	s.m[strings.Clone(key)] = e
	return e
}

// window is the request window of a decision from e at now.
func (e *leaseEntry) window(now int64) Window {
	return Window{
		Limit:     e.lim.burst(),
		Remaining: e.redis + e.units,
		Reset:     max(0, e.reset-time.Duration(now-e.at)),
	}
}

// allowLease decides a request on an unlimited token budget with a lease.
// handled is false when Redis may not be called (the breaker is open): the
// caller then falls back as without leases.
func (l *Limiter) allowLease(ctx context.Context, key string, req Limit, n int) (d Decision, handled bool, err error) {
	s := l.leases.shard(key)
	for {
		now := l.mono()
		s.mu.Lock()
		e := s.m[key]
		if e == nil {
			e = s.insert(key, now)
			e.lim = req
		}
		if e.lim != req {
			// The key's limit changed: what was leased under the old one
			// is dropped.
			e.lim, e.units, e.deniedUntil = req, 0, 0
		}
		if e.units > 0 && now < e.expires {
			e.units--
			d = Decision{Allowed: true, Requests: e.window(now), Source: SourceRedis}
			s.mu.Unlock()
			l.redisDecisions.Add(1)
			l.leaseDecisions.Add(1)
			return d, true, nil
		}
		if now < e.deniedUntil {
			d = Decision{
				Requests:   e.window(now),
				RetryAfter: time.Duration(e.deniedUntil - now),
				Source:     SourceRedis,
			}
			s.mu.Unlock()
			l.redisDecisions.Add(1)
			l.leaseDecisions.Add(1)
			return d, true, nil
		}
		if ch := e.fetch; ch != nil {
			s.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return Decision{Source: SourceNone}, true, fmt.Errorf("ratelimit: %w", ctx.Err())
			}
		}
		use, probe := l.useRedis()
		if !use {
			s.mu.Unlock()
			return Decision{}, false, nil
		}
		ch := make(chan struct{})
		e.fetch, e.units = ch, 0
		s.mu.Unlock()

		k, v, ferr := l.leaseRedis(ctx, key, req, n)

		s.mu.Lock()
		e.fetch = nil
		if ferr == nil && e.lim == req {
			e.at, e.redis, e.reset = now, int(v[1]), micros(v[2])
			if k > 0 {
				e.units = k - 1 // the first is this caller's
				e.expires = now + int64(leaseLifetime(req, n))
			} else {
				// now is before Redis decided, so this ends no later
				// than Redis's own RetryAfter.
				e.deniedUntil = now + int64(micros(v[3]))
			}
		}
		close(ch)
		s.mu.Unlock()

		if ferr == nil {
			l.local.remember(key, req, levelOf(v[2], req.interval(time.Microsecond)), Limit{}, 0)
			d = Decision{
				Allowed:  k > 0,
				Requests: Window{Limit: req.burst(), Remaining: int(v[1]) + max(k-1, 0), Reset: micros(v[2])},
				Source:   SourceRedis,
			}
			if k == 0 {
				d.RetryAfter = micros(v[3])
			}
			l.redisOK()
			l.redisDecisions.Add(1)
			l.leasesTaken.Add(1)
			return d, true, nil
		}
		if ctx.Err() != nil {
			l.probeAborted(probe)
			return Decision{Source: SourceNone}, true, fmt.Errorf("ratelimit: %w", ctx.Err())
		}
		l.redisFailed(ferr)
		if l.failMode == FailClosed {
			return Decision{Source: SourceNone}, true, fmt.Errorf("%w: %w", ErrUnavailable, ferr)
		}
		l.localDecisions.Add(1)
		return l.local.allow(key, req, Limit{}, l.share()), true, nil
	}
}

// leaseRedis runs leaseScript: k units granted and the raw reply.
func (l *Limiter) leaseRedis(ctx context.Context, key string, req Limit, n int) (int, [4]int64, error) {
	var v [4]int64
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	keys := l.keys(key)
	reply, err := leaseScript.Run(ctx, l.rdb, keys[:1], req.interval(time.Microsecond), req.burst(), n).Result()
	if err != nil {
		return 0, v, fmt.Errorf("ratelimit: evaluating lease script: %w", err)
	}
	if err := int64s(reply, v[:]); err != nil {
		return 0, v, fmt.Errorf("ratelimit: evaluating lease script: %w", err)
	}
	if v[0] < 0 || v[0] > int64(n) {
		return 0, v, fmt.Errorf("ratelimit: evaluating lease script: granted %d units of %d", v[0], n)
	}
	return int(v[0]), v, nil
}
