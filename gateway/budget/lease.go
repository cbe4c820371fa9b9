package budget

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/store"
)

// Leases: a replica reserves dollars from a budget's Redis counter a
// chunk at a time and spends them locally, so that most requests are
// decided without a round trip, as the rate limiter's leases do for
// request units (ratelimit/lease.go).
//
//   - Redis counts every dollar a replica holds as spent. A request is
//     admitted locally only from what its replica holds (for each budget
//     that applies to it), so the replicas together never reserve more
//     than the limit, and what they spend exceeds it by at most the
//     requests' reconciliation errors (actual cost beyond the reservation,
//     which a budget cannot refuse after the answer): the same bound as
//     without leases.
//   - When a replica's lease of some budget cannot cover a request, the
//     request goes to Redis (leaseScript): the replica gives back all it
//     holds of the request's budgets, and Redis, deciding as without
//     leases, reserves the request's amount plus a new lease of
//     min(leaseRequests × amount (at least minLease), what is left after
//     the amount / leaseDivisor). Leases shrink with the budget's
//     remainder, so near the limit a replica holds little that another
//     could have used: the replicas under-spend by at most about
//     (replicas - 1) × remainder / leaseDivisor, and a request refused by
//     Redis was refused with everything its replica held given back.
//   - A request ends: what it reserved beyond its cost goes back to its
//     replica's lease (still counted in Redis); a cost beyond the
//     reservation is taken from the lease, or added in Redis. A lease
//     grown past twice its size (plus a request) gives the excess back.
//     Once a lease is over (expired, or Redis refused one of the
//     organization's requests), corrections go to Redis directly, so
//     that near the limit no replica keeps what another could spend.
//   - A lease lives leaseLifetime: then the next request asks Redis again
//     (giving it back first) and Run gives back leases left idle. Run gives
//     back every lease when it ends. A budget changed (limit, window) or a
//     new window bucket voids the lease for the next request (given back).
//   - Redis lost a counter (flush, restart): it is rebuilt from the
//     request log under a new generation; what replicas held of the old
//     one is dropped, never given back into the new one. Until each
//     replica next asks Redis, it may still spend its lease of the lost
//     counter: a flush can cost at most one lease per replica (on top of
//     the reservations in flight and rows not yet written, see rebuild).
//   - The counter may be Redis's or PostgreSQL's (counter.go): the same
//     state, decision and leases. Without Redis, PostgreSQL's alone.
//   - Redis unreachable: leases already held keep being spent (Redis
//     counted them); a request its replica's lease cannot cover moves to
//     PostgreSQL's counter, built from the request log by the first
//     replica there and shared by the others. After a Redis failure Redis
//     is left alone for redisCooldown, then one request probes it. The
//     first replica back on Redis closes the PostgreSQL counter (so that
//     the next outage starts from the log, not from a counter that missed
//     what Redis counted since) and drops Redis's, rebuilt from the log
//     (it missed what PostgreSQL counted); a replica still on PostgreSQL
//     that finds the counter gone probes Redis at once instead of opening
//     another. A PostgreSQL counter idle fallbackTTL is built again. With
//     PostgreSQL unreachable too, a request no lease covers fails with
//     ErrUnavailable (the gateway answers 503 budget_unavailable): budgets
//     fail closed, a budget being a promise about money.
//   - The bound: the replicas spend at most the limit, plus the requests'
//     reconciliation errors, plus at each change of counter (Redis lost or
//     flushed, the move to PostgreSQL, the return, an idle PostgreSQL
//     counter rebuilt) what the replicas held of the old counter (one
//     lease each) and the reservations in flight and rows not yet written
//     when the new one was built from the log. A Redis outage is two
//     changes. Not bounded so: a partition that lets some replicas reach
//     Redis and not others; each group is held to its own counter, and
//     they meet only in the log (at worst a second budget is spent).
//   - Decision.Remaining of a leased admission is what Redis had left at
//     this replica's last lease plus what the replica still holds: other
//     replicas' spending since that lease (at most leaseLifetime ago) is
//     not seen, so with several replicas it may be above the truth by
//     that much. With one replica it is exact. Soft thresholds are
//     checked against the same estimate of spend (the replica's view).
const (
	leaseDivisor  = 16
	leaseRequests = 256
	minLease      = store.MicroUSD(10_000) // $0.01
	leaseLifetime = time.Second
)

// orgLeases is one organization's leases on this replica.
type orgLeases struct {
	mu sync.Mutex
	// fetch is non-nil while a request asks Redis for this organization;
	// closed when it is done. Others wait for it, then try their leases.
	fetch chan struct{}
	ents  map[uuid.UUID]*leaseEntry // by budget ID
}

// leaseEntry is one budget's lease; its fields are guarded by its
// orgLeases' mu.
type leaseEntry struct {
	ref     ref     // the budget's counter
	ctr     counter // where the lease was taken (nil: nowhere yet)
	limit   store.MicroUSD
	window  store.BudgetWindow
	gen     int64 // the counter's generation; 0: nothing leased yet
	bucket  int64 // the bucket the lease was added to
	low     int64 // the lowest live bucket then
	held    int64 // micro-USD counted in Redis that no request has reserved
	seen    int64 // the counter's spend after the last lease (held included)
	size    int64 // the last lease's size
	expires time.Time
}

// part is one budget of a reservation.
type part struct {
	b      store.Budget
	ent    *leaseEntry
	ctr    counter // the counter its reservation is counted in
	gen    int64
	bucket int64
	low    int64
	ttl    time.Duration
	window time.Time // where its alert window starts
}

func (ol *orgLeases) entry(e *Enforcer, b store.Budget) *leaseEntry {
	ent := ol.ents[b.ID]
	if ent == nil {
		ent = &leaseEntry{ref: ref{org: b.OrgID, id: b.ID, key: e.key(b)}}
		ol.ents[b.ID] = ent
	}
	return ent
}

// usable reports whether ent can cover amount for a request in bucket at
// now, for budget b.
func (ent *leaseEntry) usable(b store.Budget, bucket int64, amount int64, now time.Time) bool {
	return ent != nil && ent.gen != 0 && ent.limit == b.Limit && ent.window == b.Window && ent.bucket == bucket &&
		now.Before(ent.expires) && ent.held >= amount && (amount > 0 || ent.held > 0)
}

// remaining is what ent's budget has left as this replica sees it.
func (ent *leaseEntry) remaining() store.MicroUSD {
	return max(ent.limit-store.MicroUSD(ent.seen-ent.held), 0)
}

// takeLocal admits res from this replica's leases if every one of its
// budgets can cover it; ol.mu must be held.
func (ol *orgLeases) takeLocal(res *Reservation, now time.Time) (Decision, bool) {
	amount := int64(res.amount)
	for i := range res.parts {
		p := &res.parts[i]
		if !ol.ents[p.b.ID].usable(p.b, p.bucket, amount, now) {
			return Decision{}, false
		}
	}
	pick := 0
	for i := range res.parts {
		p := &res.parts[i]
		p.ent = ol.ents[p.b.ID]
		p.ctr, p.gen = p.ent.ctr, p.ent.gen
		p.ent.held -= amount
		if p.ent.remaining() < res.parts[pick].ent.remaining() {
			pick = i
		}
	}
	return leasedDecision(&res.parts[pick]), true
}

func leasedDecision(p *part) Decision {
	return Decision{Applies: true, Allowed: true, Remaining: p.ent.remaining(), Limit: p.b.Limit, Level: p.b.Level(), Window: p.b.Window}
}

// reserveShared asks counter c for res's amount and new leases, giving
// back what this replica holds of res's budgets first. ol.fetch is set by
// the caller, which holds no lock; reserveShared clears it. missing lists
// the budgets whose counters must be rebuilt (nothing was changed then);
// lost reports that one of them is a counter this replica had leased from
// (rather than one never seen).
func (e *Enforcer) reserveShared(ctx context.Context, c counter, ol *orgLeases, res *Reservation, now time.Time) (d Decision, ok bool, missing []int, lost bool, err error) {
	var later []func(context.Context) // corrections, once unlocked
	defer func() {
		ol.mu.Lock()
		close(ol.fetch)
		ol.fetch = nil
		ol.mu.Unlock()
		e.queueAll(later)
	}()
	if e.redis != nil && e.pg != nil && c == counter(e.redis) {
		if err := e.leaveFallback(ctx, ol, res); err != nil {
			return Decision{}, false, nil, false, err
		}
	}
	amount := int64(res.amount)
	most := max(leaseRequests*amount, int64(minLease))
	args := make([]leaseArg, len(res.parts))
	backs := make([]int64, len(res.parts))
	ol.mu.Lock()
	for i := range res.parts {
		p := &res.parts[i]
		p.ent = ol.entry(e, p.b)
		if p.ent.ctr != c {
			// A lease of the other counter: given back there (if it still
			// has that generation); this one starts afresh.
			later = e.adjustJob(later, p.ent.ctr, p.ent.ref, p.ent.gen, p.ent.bucket, p.ent.low, -p.ent.held)
			p.ent.ctr, p.ent.gen, p.ent.held = c, 0, 0
		}
		backs[i] = p.ent.held
		p.ent.held = 0
		args[i] = leaseArg{ref: p.ent.ref, limit: int64(p.b.Limit), low: p.low, bucket: p.bucket, ttl: p.ttl, most: most,
			backBucket: p.ent.bucket, back: backs[i], backGens: p.ent.gen}
	}
	ol.mu.Unlock()

	reply, err := c.lease(ctx, res.parts[0].b.OrgID, amount, args)

	ol.mu.Lock()
	defer ol.mu.Unlock()
	if err != nil {
		// The call may still have run: what was given back stays given
		// back (the strict side).
		return Decision{}, false, nil, false, err
	}
	switch reply[0] {
	case -1: // nothing changed: the leases given back are still held
		for i := range res.parts {
			res.parts[i].ent.held += backs[i]
		}
		for _, i := range reply[1:] {
			if i < 1 || int(i) > len(res.parts) {
				return Decision{}, false, nil, false, fmt.Errorf("%w: bad reply %v", ErrUnavailable, reply)
			}
			ent := res.parts[i-1].ent
			lost = lost || ent.gen != 0
			ent.gen, ent.held = 0, 0 // the lost counter's lease is void
			missing = append(missing, int(i-1))
		}
		return Decision{}, false, missing, lost, nil
	case 0:
		if len(reply) != len(res.parts)+2 {
			return Decision{}, false, nil, false, fmt.Errorf("%w: bad reply %v", ErrUnavailable, reply)
		}
		refusing := int(reply[len(reply)-1]) - 1
		if refusing < 0 || refusing >= len(res.parts) {
			return Decision{}, false, nil, false, fmt.Errorf("%w: bad reply %v", ErrUnavailable, reply)
		}
		for i := range res.parts {
			// What this replica held was given back, and what requests in
			// flight give back goes straight to the counter, where another
			// replica can use it.
			res.parts[i].ent.seen, res.parts[i].ent.expires = reply[1+i], time.Time{}
		}
		e.m.refused.WithLabelValues(res.parts[refusing].b.Level()).Inc()
		return e.decide(res.parts, reply[1:len(reply)-1], false, refusing), false, nil, false, nil
	}
	if len(reply) != 1+3*len(res.parts) {
		return Decision{}, false, nil, false, fmt.Errorf("%w: bad reply %v", ErrUnavailable, reply)
	}
	pick := 0
	for i := range res.parts {
		p := &res.parts[i]
		spent, extra, gen := reply[1+3*i], reply[2+3*i], reply[3+3*i]
		ent := p.ent
		if (ent.gen != gen || ent.bucket != p.bucket) && ent.held > 0 {
			// Given back to the counter it was taken from: ended requests
			// returned it while this one asked the counter.
			later = e.adjustJob(later, ent.ctr, ent.ref, ent.gen, ent.bucket, ent.low, -ent.held)
			ent.held = 0
		}
		ent.limit, ent.window, ent.gen, ent.bucket, ent.low = p.b.Limit, p.b.Window, gen, p.bucket, p.low
		ent.held += extra
		ent.seen, ent.size, ent.expires = spent, extra, now.Add(leaseLifetime)
		p.ctr, p.gen = c, gen
		if ent.remaining() < res.parts[pick].ent.remaining() {
			pick = i
		}
	}
	return leasedDecision(&res.parts[pick]), true, nil, false, nil
}

// leaveFallback is a replica's way back to Redis after it leased from
// PostgreSQL's counters while Redis was unreachable: each PostgreSQL
// counter of res's budgets that it leased from is closed (deleted), so
// that the next outage starts from the request log, not from a counter
// that missed what Redis counted since; and where this replica closed it
// (the first to come back), the budget's Redis counter is dropped, to be
// rebuilt from the request log: it missed what PostgreSQL counted. The
// PostgreSQL leases still held are void (neither spent nor given back).
// ol.fetch is set by the caller.
func (e *Enforcer) leaveFallback(ctx context.Context, ol *orgLeases, res *Reservation) error {
	type closing struct {
		r   ref
		gen int64
	}
	var cs []closing
	ol.mu.Lock()
	for i := range res.parts {
		ent := ol.entry(e, res.parts[i].b)
		if ent.ctr == counter(e.pg) {
			if ent.gen != 0 {
				cs = append(cs, closing{ent.ref, ent.gen})
			}
			ent.ctr, ent.gen, ent.held = nil, 0, 0
		}
	}
	ol.mu.Unlock()
	if len(cs) > 0 {
		// Only once Redis answers: a probe of a Redis still away must
		// not close the counter the other replicas are leasing from.
		if err := e.redis.ping(ctx); err != nil {
			return err
		}
	}
	for _, c := range cs {
		closed, err := e.pg.close(ctx, c.r, c.gen)
		if err != nil || closed {
			// Unsure whether PostgreSQL counted spend that Redis missed: rebuild.
			if err := e.redis.drop(ctx, c.r); err != nil {
				return err
			}
		}
	}
	return nil
}

// settleLeases reconciles res with its actual cost on this replica's
// leases: what it reserved beyond its cost goes back to the lease, a cost
// beyond the reservation comes from it or is added in Redis; then soft
// thresholds are checked against the replica's estimate of spend.
func (e *Enforcer) settleLeases(res Reservation, actual store.MicroUSD) {
	delta := int64(actual - res.amount)
	ol := res.ol
	now := e.o.Now()
	var later []func(context.Context) // Redis corrections and alert claims, once unlocked
	ol.mu.Lock()
	for i := range res.parts {
		p := &res.parts[i]
		ent := p.ent
		if ent.ctr != p.ctr || ent.gen != p.gen || ent.bucket != p.bucket {
			// The lease it came from is gone (given back, its counter lost,
			// or the replica moved to another counter): correct the
			// counter it was counted in.
			if delta != 0 {
				later = e.adjustJob(later, p.ctr, ent.ref, p.gen, p.bucket, p.low, delta)
			}
			continue
		}
		switch {
		case !now.Before(ent.expires):
			// The lease is over (expired, or Redis refused a request):
			// straight to the counter, for any replica to use.
			later = e.adjustJob(later, p.ctr, ent.ref, p.gen, p.bucket, p.low, delta)
			ent.seen += delta
		case delta <= 0 || ent.held >= delta:
			ent.held -= delta
		default:
			later = e.adjustJob(later, p.ctr, ent.ref, p.gen, p.bucket, p.low, delta)
			ent.seen += delta
		}
		if excess := ent.held - ent.size; excess > ent.size+int64(res.amount) {
			ent.held -= excess
			ent.seen -= excess
			later = e.adjustJob(later, ent.ctr, ent.ref, ent.gen, ent.bucket, ent.low, -excess)
		}
		spent := ent.seen - ent.held
		for _, pm := range p.b.AlertAt {
			if spent*1000 >= int64(p.b.Limit)*int64(pm) {
				later = e.alertJob(later, p.b, p.window, pm, store.MicroUSD(spent))
			}
		}
	}
	ol.mu.Unlock()
	e.queueAll(later)
}

// adjustJob appends to jobs the addition of amount to r's counter of
// generation gen in c.
func (e *Enforcer) adjustJob(jobs []func(context.Context), c counter, r ref, gen, bucket, low, amount int64) []func(context.Context) {
	if amount == 0 || gen == 0 || c == nil {
		return jobs
	}
	return append(jobs, func(ctx context.Context) { e.adjust(ctx, c, r, gen, bucket, low, amount) })
}

func (e *Enforcer) adjust(ctx context.Context, c counter, r ref, gen, bucket, low, amount int64) {
	if err := c.adjust(ctx, r, gen, bucket, low, amount); err != nil {
		e.o.Log.Warn("budget spend not reconciled", zap.String("counter", c.name()), zap.String("budget", r.id.String()),
			zap.Int64("delta_micro_usd", amount), zap.Error(err))
	}
}

// alertJob appends to jobs the announcement of a threshold reached,
// unless this replica knows it was claimed already (the claim is a
// PostgreSQL call).
func (e *Enforcer) alertJob(jobs []func(context.Context), b store.Budget, window time.Time, permille int, spent store.MicroUSD) []func(context.Context) {
	if _, done := e.alerted.Load(alertKey{b.ID, window.Unix(), permille}); done {
		return jobs
	}
	return append(jobs, func(ctx context.Context) { e.alert(ctx, b, window, permille, spent) })
}

// queueAll queues jobs (see queue); no lock may be held, as a job may run
// here.
func (e *Enforcer) queueAll(jobs []func(context.Context)) {
	for _, job := range jobs {
		e.queue(job)
	}
}

// queue runs job on one of Run's workers, or here when they are not
// running or are full (a reconciliation is never dropped).
func (e *Enforcer) queue(job func(context.Context)) {
	if e.running.Load() {
		select {
		case e.jobs <- job:
			return
		default:
		}
	}
	job(context.Background())
}

// giveBack returns to Redis the leases idle since they expired at now
// (all of them when all is set: Run is ending).
func (e *Enforcer) giveBack(ctx context.Context, now time.Time, all bool) {
	e.mu.Lock()
	ols := make([]*orgLeases, 0, len(e.leases))
	for _, ol := range e.leases {
		ols = append(ols, ol)
	}
	e.mu.Unlock()
	type back struct {
		ctr                    counter
		r                      ref
		gen, bucket, low, held int64
	}
	var backs []back
	for _, ol := range ols {
		ol.mu.Lock()
		if ol.fetch == nil {
			for _, ent := range ol.ents {
				if ent.held > 0 && ent.gen != 0 && ent.ctr != nil && (all || !now.Before(ent.expires)) {
					backs = append(backs, back{ent.ctr, ent.ref, ent.gen, ent.bucket, ent.low, ent.held})
					ent.seen -= ent.held
					ent.held = 0
				}
			}
		}
		ol.mu.Unlock()
	}
	for _, b := range backs {
		e.adjust(ctx, b.ctr, b.r, b.gen, b.bucket, b.low, -b.held)
	}
}

// leasesOf returns org's leases, and the jobs giving back what leases
// it dropped held (to queue once e.mu is released); e.mu must be held.
func (e *Enforcer) leasesOf(org uuid.UUID) (ol *orgLeases, later []func(context.Context)) {
	if ol = e.leases[org]; ol != nil {
		return ol, nil
	}
	if len(e.leases) >= maxCachedOrgs {
		// Start over; what the dropped leases held is given back.
		for _, old := range e.leases {
			old.mu.Lock()
			for _, ent := range old.ents {
				later = e.adjustJob(later, ent.ctr, ent.ref, ent.gen, ent.bucket, ent.low, -ent.held)
				ent.held, ent.gen = 0, 0
			}
			old.mu.Unlock()
		}
		clear(e.leases)
	}
	ol = &orgLeases{ents: map[uuid.UUID]*leaseEntry{}}
	e.leases[org] = ol
	return ol, later
}

// newGeneration returns a counter generation: a random positive integer
// that Lua's doubles hold exactly.
func newGeneration() int64 { return 2 + rand.Int64N(1<<52) }
