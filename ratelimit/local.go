package ratelimit

import (
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// local is the in-process limiter: the same GCRA as the Lua script, for
// one instance. Safe for concurrent use; a decision on a known key does not
// allocate.
//
// As the fallback of a Limiter with Redis, it holds the fleet's view of
// each budget: remember writes the level Redis last reported, and a decision
// charges this instance's spending w times (w = the replicas alive, see
// replicas.go), so that each replica admits its 1/w share of what is left
// and of the refill. In single-instance mode w is 1.
//
// Memory is bounded by maxKeys entries (about 100 bytes each with the key).
// An entry whose budgets are fully restored is equivalent to no entry and is
// swept when its shard is full; when a full shard holds only live entries,
// an arbitrary one is evicted (its usage forgotten, which can only admit
// more) and counted in evictions.
type local struct {
	seed      maphash.Seed
	now       func() time.Time
	evictions atomic.Uint64
	shards    [localShards]localShard
}

const (
	localShards = 64
	// sweepEvery is how often a full shard may be scanned for restored
	// entries; between scans, inserting into a full shard evicts one
	// arbitrary entry instead, so a flood of keys costs O(1) per insert.
	sweepEvery = time.Second
)

type localShard struct {
	mu        sync.Mutex
	m         map[string]localEntry
	limit     int // entries; at least 1
	nextSweep int64
	_         [32]byte // keep shards on separate cache lines
}

// localEntry holds both budgets of a key. until is when both are fully
// restored, after which the entry may be dropped.
type localEntry struct {
	req, tok bucket
	until    int64
}

func newLocal(maxKeys int, now func() time.Time) *local {
	l := &local{
		seed: maphash.MakeSeed(),
		now:  now,
	}
	for i := range l.shards {
		l.shards[i].m = make(map[string]localEntry)
		l.shards[i].limit = max(1, (maxKeys+localShards-1)/localShards)
	}
	return l
}

func (l *local) shard(key string) *localShard {
	return &l.shards[maphash.String(l.seed, key)%localShards]
}

// allow decides one request for key, exactly as the Lua script does when w
// is 1; each unit costs w (see local).
func (l *local) allow(key string, req, tok Limit, w float64) Decision {
	now := l.now().UnixNano()
	ri, rb := req.interval(time.Nanosecond), float64(req.burst())
	ti, tb := tok.interval(time.Nanosecond), float64(tok.burst())

	s := l.shard(key)
	s.mu.Lock()
	e, found := s.m[key]
	var rl, tl float64
	if found && ri > 0 {
		rl = e.req.levelAt(now, ri)
	}
	if found && ti > 0 {
		tl = e.tok.levelAt(now, ti)
	}
	var rwait, twait float64
	if ri > 0 {
		rwait = over(rl, w, rb) * ri
	}
	if ti > 0 {
		twait = over(tl, w, tb) * ti
	}
	allowed := rwait == 0 && twait == 0
	if allowed && ri > 0 {
		rl += w
		e.req = bucket{level: rl, last: now}
		e.until = max(e.until, now+int64(rl*ri))
		s.store(key, e, found, now, &l.evictions)
	}
	s.mu.Unlock()

	return Decision{
		Allowed:    allowed,
		Requests:   window(ri, rb, rl, w, time.Nanosecond),
		Tokens:     window(ti, tb, tl, w, time.Nanosecond),
		RetryAfter: durationOf(max(rwait, twait), time.Nanosecond),
		Source:     SourceLocal,
	}
}

// reserve sets tokens aside for a request allow admitted, exactly as the
// Lua script does when w is 1; each token costs w. A refusal gives the
// request unit back (w of the request budget).
func (l *local) reserve(key string, req, tok Limit, tokens int, w float64) Decision {
	now := l.now().UnixNano()
	ri := req.interval(time.Nanosecond)
	ti, tb := tok.interval(time.Nanosecond), float64(tok.burst())
	n := float64(tokens)

	s := l.shard(key)
	s.mu.Lock()
	e, found := s.m[key]
	var tl float64
	if found {
		tl = e.tok.levelAt(now, ti)
	}
	var wait float64
	allowed := n <= tb && over(tl, n*w, tb) == 0
	switch {
	case allowed:
		tl += n * w
		e.tok = bucket{level: tl, last: now}
		e.until = max(e.until, now+int64(min(tl*ti, float64(maxDuration))))
		s.store(key, e, found, now, &l.evictions)
	default:
		wait = over(tl, min(n, tb)*w, tb) * ti
		if found && ri > 0 {
			e.req = bucket{level: max(0, e.req.levelAt(now, ri)-w), last: now}
			s.m[key] = e
		}
	}
	s.mu.Unlock()

	d := Decision{
		Allowed:    allowed,
		Tokens:     window(ti, tb, tl, w, time.Nanosecond),
		RetryAfter: durationOf(wait, time.Nanosecond),
		Source:     SourceLocal,
	}
	if allowed {
		d.Reservation = Reservation{Tokens: tokens, Source: SourceLocal}
	}
	return d
}

// charge adds units to key's token budget, going into debt past the burst;
// negative units give tokens back, down to a full budget.
func (l *local) charge(key string, tok Limit, units float64) {
	now := l.now().UnixNano()
	ti := tok.interval(time.Nanosecond)

	s := l.shard(key)
	s.mu.Lock()
	e, found := s.m[key]
	if !found && units <= 0 {
		s.mu.Unlock()
		return
	}
	tl := units
	if found {
		tl += e.tok.levelAt(now, ti)
	}
	tl = max(tl, 0)
	e.tok = bucket{level: tl, last: now}
	e.until = max(e.until, now+int64(min(tl*ti, float64(maxDuration))))
	s.store(key, e, found, now, &l.evictions)
	s.mu.Unlock()
}

// remember records the levels Redis reported for key's request and token
// budgets, taken now: where the fallback starts if Redis goes away. A zero
// Limit leaves that budget as it is.
func (l *local) remember(key string, req Limit, rl float64, tok Limit, tl float64) {
	ri, ti := req.interval(time.Nanosecond), tok.interval(time.Nanosecond)
	rl, tl = max(rl, 0), max(tl, 0)
	now := l.now().UnixNano()
	s := l.shard(key)
	s.mu.Lock()
	e, found := s.m[key]
	if !found && (ri == 0 || rl == 0) && (ti == 0 || tl == 0) {
		s.mu.Unlock()
		return // full budgets are no entry
	}
	if ri > 0 {
		e.req = bucket{level: rl, last: now}
		e.until = max(e.until, now+int64(min(rl*ri, float64(maxDuration))))
	}
	if ti > 0 {
		e.tok = bucket{level: tl, last: now}
		e.until = max(e.until, now+int64(min(tl*ti, float64(maxDuration))))
	}
	s.store(key, e, found, now, &l.evictions)
	s.mu.Unlock()
}

// store writes e under key; s.mu must be held. A new key is copied (the
// caller's string may alias a reused buffer) and may first make room.
func (s *localShard) store(key string, e localEntry, found bool, now int64, evictions *atomic.Uint64) {
	if found {
		s.m[key] = e
		return
	}
	if len(s.m) >= s.limit {
		s.makeRoom(now, evictions)
	}
	s.m[strings.Clone(key)] = e
}

// makeRoom drops restored entries (at most once per sweepEvery) and, if the
// shard is still full, one arbitrary live entry.
func (s *localShard) makeRoom(now int64, evictions *atomic.Uint64) {
	if now >= s.nextSweep {
		s.nextSweep = now + int64(sweepEvery)
		for k, e := range s.m {
			if e.until <= now {
				delete(s.m, k)
			}
		}
	}
	if len(s.m) < s.limit {
		return
	}
	for k := range s.m {
		delete(s.m, k)
		evictions.Add(1)
		break
	}
}

// len is the number of entries held, for tests.
func (l *local) len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// window reports one budget at a level, with Remaining in units costing w;
// the zero Window when unlimited.
func window(interval, burst, level, w float64, unit time.Duration) Window {
	if interval == 0 {
		return Window{}
	}
	return Window{
		Limit:     int(burst),
		Remaining: remainingShare(level, burst, w),
		Reset:     durationOf(level*interval, unit),
	}
}
