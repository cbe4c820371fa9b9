package budget

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/bulkheadhq/bulkhead/store"
)

// counter holds the budgets' shared counters, for every replica: Redis
// (redisCounter, lua.go) or PostgreSQL (pgCounter, main migration 00020).
// Both keep the same state (a generation, and the spend per window
// bucket, leases and reservations in flight included) and make the same
// decision, so that lease.go's one lease and decision path runs over
// either. Every method is safe for concurrent use, and bounded by the
// counter's own timeout.
type counter interface {
	// lease gives back each part's lease, then reserves amount from every
	// part's counter and leases a chunk beyond it, all or nothing. The
	// reply is leaseScript's (lua.go).
	lease(ctx context.Context, org uuid.UUID, amount int64, ps []leaseArg) ([]int64, error)
	// adjust adds amount (signed) to bucket of r's counter if the counter
	// is of generation gen and bucket is still live (at least low).
	adjust(ctx context.Context, r ref, gen, bucket, low, amount int64) error
	// init builds r's counter, holding spent in bucket, under generation
	// gen, living ttl, unless it exists already.
	init(ctx context.Context, r ref, bucket, spent int64, ttl time.Duration, gen int64) error
	// name is the counter's label in metrics and logs.
	name() string
}

// ref names one budget's counter.
type ref struct {
	org, id uuid.UUID
	key     string // in Redis
}

// leaseArg is one budget's part of a lease: its limit, the lowest bucket
// still in its window, the bucket to add to, how long the counter must
// outlive its last write, the most to lease beyond the amount, and the
// lease this replica gives back first (its bucket, amount, generation).
type leaseArg struct {
	ref                        ref
	limit, low, bucket         int64
	ttl                        time.Duration
	most                       int64
	backBucket, back, backGens int64
}

// redisCounter keeps the counters in Redis: the default, shared by every
// replica at a round trip of well under a millisecond.
type redisCounter struct {
	rdb     redis.UniversalClient
	timeout time.Duration
}

func (c *redisCounter) name() string { return "redis" }

func (c *redisCounter) lease(ctx context.Context, _ uuid.UUID, amount int64, ps []leaseArg) ([]int64, error) {
	keys := make([]string, len(ps))
	args := make([]any, 0, 2+8*len(ps))
	args = append(args, amount, leaseDivisor)
	for i, p := range ps {
		keys[i] = p.ref.key
		args = append(args, p.limit, p.low, strconv.FormatInt(p.bucket, 10), p.ttl.Milliseconds(), p.most,
			strconv.FormatInt(p.backBucket, 10), p.back, strconv.FormatInt(p.backGens, 10))
	}
	return c.run(ctx, leaseScript, keys, args)
}

// run calls a script within the timeout and reads its integer reply.
func (c *redisCounter) run(ctx context.Context, s *redis.Script, keys []string, args []any) ([]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return counterReply(s.Run(ctx, c.rdb, keys, args...).Int64Slice())
}

// counterReply is a counter's integer reply, or ErrUnavailable when the call
// failed or answered nothing.
func counterReply(v []int64, err error) ([]int64, error) {
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if len(v) == 0 {
		return nil, fmt.Errorf("%w: empty reply", ErrUnavailable)
	}
	return v, nil
}

func (c *redisCounter) adjust(ctx context.Context, r ref, gen, bucket, low, amount int64) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return adjustScript.Run(ctx, c.rdb, []string{r.key}, strconv.FormatInt(gen, 10), strconv.FormatInt(bucket, 10), low, amount).Err()
}

func (c *redisCounter) init(ctx context.Context, r ref, bucket, spent int64, ttl time.Duration, gen int64) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := initScript.Run(ctx, c.rdb, []string{r.key}, strconv.FormatInt(bucket, 10), spent, ttl.Milliseconds(), gen).Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// ping checks that Redis answers.
func (c *redisCounter) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := c.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// drop deletes r's counter, so that the next lease rebuilds it from the
// request log.
func (c *redisCounter) drop(ctx context.Context, r ref) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := c.rdb.Del(ctx, r.key).Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// Counters is PostgreSQL's budget counters (store.Store, main migration
// 00020), written as the app role in the organization's tenant context.
type Counters interface {
	LeaseBudgets(ctx context.Context, org uuid.UUID, amount, divisor int64, ps []store.BudgetLease) ([]int64, error)
	AdjustBudgetCounter(ctx context.Context, org, budget uuid.UUID, gen, bucket, low, amount int64) (bool, error)
	InitBudgetCounter(ctx context.Context, org, budget uuid.UUID, gen, bucket, spent int64, ttl time.Duration) error
	CloseBudgetCounter(ctx context.Context, org, budget uuid.UUID, gen int64) (bool, error)
}

var _ Counters = (*store.Store)(nil)

// pgCounter keeps the counters in PostgreSQL: without Redis, and while
// Redis is unreachable. A lease costs one transaction of three round
// trips; leases make that once per many requests.
type pgCounter struct {
	c       Counters
	timeout time.Duration
	// maxTTL caps how long a counter lives unused (0: its window's TTL).
	// As Redis's fallback, a counter left idle that long is built again
	// from the request log: it may have missed what Redis counted since.
	maxTTL time.Duration
}

func (c *pgCounter) name() string { return "postgres" }

func (c *pgCounter) ttl(t time.Duration) time.Duration {
	if c.maxTTL > 0 && c.maxTTL < t {
		return c.maxTTL
	}
	return t
}

func (c *pgCounter) lease(ctx context.Context, org uuid.UUID, amount int64, ps []leaseArg) ([]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	bl := make([]store.BudgetLease, len(ps))
	for i, p := range ps {
		bl[i] = store.BudgetLease{ID: p.ref.id, Limit: p.limit, Low: p.low, Bucket: p.bucket, TTL: c.ttl(p.ttl), Most: p.most,
			BackBucket: p.backBucket, Back: p.back, BackG: p.backGens}
	}
	return counterReply(c.c.LeaseBudgets(ctx, org, amount, leaseDivisor, bl))
}

func (c *pgCounter) adjust(ctx context.Context, r ref, gen, bucket, low, amount int64) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	_, err := c.c.AdjustBudgetCounter(ctx, r.org, r.id, gen, bucket, low, amount)
	return err
}

func (c *pgCounter) init(ctx context.Context, r ref, bucket, spent int64, ttl time.Duration, gen int64) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := c.c.InitBudgetCounter(ctx, r.org, r.id, gen, bucket, spent, c.ttl(ttl)); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// close deletes r's counter if it is of generation gen, and reports
// whether it did.
func (c *pgCounter) close(ctx context.Context, r ref, gen int64) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return c.c.CloseBudgetCounter(ctx, r.org, r.id, gen)
}
