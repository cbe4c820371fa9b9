// Package auth turns a credential into the Principal a request acts for:
// an API key (sk_<org>_<secret>, see package apikey) or a JWT carrying
// organization_id. The tenant always comes from the credential.
//
// API keys resolve through three tiers: L1, an in-process cache (bounded,
// absolute TTL, with a bounded negative cache for unknown keys); L2, Redis,
// shared by every replica; L3, PostgreSQL, queried inside the tenant
// context named by the key's own org segment, so that row-level security
// alone guarantees a key resolves only within its organization. L3
// look-ups that fail are throttled per client address and per
// organization (throttle.go).
//
// Revocation, rotation end and expiry: expiry (and so the end of a
// rotation's overlap) is checked on every request against the cached
// expires_at, so it takes effect at once everywhere. Revocation writes a
// tombstone to Redis and publishes an invalidation that every instance's
// Run loop applies to its L1 within milliseconds; an instance that misses
// the event (or whose subscription was down, after which it purges its L1
// on resubscribing) serves the stale entry for at most the L1 TTL.
package auth

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/maypok86/otter/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/bulkheadhq/bulkhead/ratelimit"
	"github.com/bulkheadhq/bulkhead/store"
)

// Errors of Authenticate. Every rejected credential is ErrUnauthenticated,
// whatever the reason, so that a caller learns nothing from the difference.
var (
	ErrUnauthenticated = errors.New("invalid credentials")
	// ErrUnavailable: the credential could not be verified because
	// PostgreSQL is unreachable and no cache knows it. Answer 503, not 401.
	ErrUnavailable = errors.New("credentials cannot be verified right now")
)

// Kind says how a principal authenticated.
type Kind uint8

const (
	KindAPIKey Kind = iota + 1
	KindJWT
)

func (k Kind) String() string {
	switch k {
	case KindAPIKey:
		return "api_key"
	case KindJWT:
		return "jwt"
	}
	return "unknown"
}

// Principal is who a request acts for. Values returned by Authenticate may
// be shared between requests: treat them as read-only.
type Principal struct {
	Org                uuid.UUID
	KeyID              uuid.UUID // uuid.Nil for a JWT
	Kind               Kind
	RateLimitPerMinute int // 0: no request limit of its own
	TokensPerMinute    int // 0: no token limit
	Subject            string
	// EndUser is a JWT's user_id claim ("" for none and for API keys,
	// whose callers name their end user in the body's "user").
	EndUser string
	// LimitKey names the principal's rate-limit budget: the key id for an
	// API key, "org:<id>" for a JWT (all of an organization's tokens share
	// one budget). Computed once, so admission does not allocate.
	LimitKey string
	// OrgText is Org as text, computed once like LimitKey, for the access
	// log and per-tenant metrics.
	OrgText   string
	expiresAt time.Time // zero: never
}

// KeyText is KeyID as text, "" for a JWT: an API key's LimitKey is its id.
func (p *Principal) KeyText() string {
	if p.Kind != KindAPIKey {
		return ""
	}
	return p.LimitKey
}

// keyPrincipal is the principal of an API key, from the database (L3) or
// its Redis entry (L2).
func keyPrincipal(org, id uuid.UUID, rpm, tpm int, expiresAt time.Time) *Principal {
	return &Principal{Org: org, KeyID: id, Kind: KindAPIKey, LimitKey: id.String(), OrgText: org.String(),
		RateLimitPerMinute: rpm, TokensPerMinute: tpm, expiresAt: expiresAt}
}

// usable reports whether the principal's credential is still valid; it
// reads the clock only for credentials that expire.
func (p *Principal) usable(now func() time.Time) bool {
	return p.expiresAt.IsZero() || now().Before(p.expiresAt)
}

// keyStore is what the L3 tier needs from the database (store.Store).
type keyStore interface {
	LookupKeys(ctx context.Context, refs []store.KeyRef) (map[store.KeyRef]store.Key, error)
	OrgExists(ctx context.Context, org uuid.UUID) (bool, error)
}

var _ keyStore = (*store.Store)(nil)

// Options configures New. Zero (or negative) durations and sizes take
// the Default* constants.
type Options struct {
	Store keyStore              // required
	Redis redis.UniversalClient // nil: no L2 and no invalidation events (single instance)
	JWT   *JWTVerifier          // nil: JWTs are rejected
	Log   *zap.Logger           // nil: no logging

	CacheTTL      time.Duration // L1 lifetime of a verified key or organization; 0: DefaultCacheTTL
	CacheSize     int           // L1 entries; 0: DefaultCacheSize
	NegativeTTL   time.Duration // L1 lifetime of an unknown key; 0: DefaultNegativeTTL
	NegativeSize  int           // negative entries; 0: DefaultNegativeSize
	RedisTTL      time.Duration // L2 lifetime of a key; 0: DefaultRedisTTL
	RedisTimeout  time.Duration // deadline of each Redis call; 0: DefaultRedisTimeout
	LookupTimeout time.Duration // deadline of one L3 batch (one transaction); 0: DefaultLookupTimeout

	Now func() time.Time // nil: time.Now

	// Limits of JWT principals, per organization (0: none).
	JWTRateLimitPerMinute, JWTTokensPerMinute int

	// Failures holds the failure budgets of API-key look-ups that
	// PostgreSQL refuses (see throttle.go): a ratelimit.Limiter of its own,
	// in FailLocal mode, so that a Redis outage still throttles. nil: no
	// throttle.
	Failures FailureLimiter
	// FailuresPerMinutePerAddress and FailuresPerMinutePerOrg are the
	// budgets: refused look-ups per minute per client address (IPv6: per
	// /64) and per organization, each with a burst of a minute's worth.
	// 0: no budget of that kind.
	FailuresPerMinutePerAddress, FailuresPerMinutePerOrg int

	// OrgChanged, if set, is called with each organization invalidation
	// event's organization (InvalidateOrg), and with uuid.Nil when every
	// cache is purged (on (re)subscribing), so that another per-organization
	// cache follows the same events: serve gives the store's placements
	// (`bulkhead org move` publishes at each switch). nil: none.
	OrgChanged func(org uuid.UUID)
}

// Defaults of Options, applied by New to zero (or negative) fields. The
// configuration's defaults of the matching settings are these (config.Default).
const (
	DefaultCacheTTL     = 30 * time.Second
	DefaultCacheSize    = 100_000
	DefaultNegativeTTL  = 60 * time.Second
	DefaultNegativeSize = 100_000
	DefaultRedisTTL     = 5 * time.Minute
	// DefaultRedisTimeout is the limiter's: one deadline for every Redis
	// call on the request path.
	DefaultRedisTimeout  = ratelimit.DefaultTimeout
	DefaultLookupTimeout = 2 * time.Second
)

// Stats counts where look-ups were answered. All fields are cumulative.
type Stats struct {
	Malformed   uint64 // rejected by format or checksum, no I/O
	L1Hits      uint64
	L1Negative  uint64 // answered by the negative cache
	L2Lookups   uint64 // Redis reads of keys L1 missed
	L2Hits      uint64
	L2Errors    uint64
	L3Lookups   uint64 // keys looked up in PostgreSQL
	L3Queries   uint64 // PostgreSQL transactions that looked them up (a batch is one)
	L3Errors    uint64
	Purges      uint64 // whole-L1 purges after (re)subscribing
	Invalidated uint64 // invalidation events applied
	// Failures counts API-key look-ups that PostgreSQL refused (unknown,
	// revoked or expired): what the failure budgets are charged.
	Failures uint64
	// ThrottledAddress and ThrottledOrg count look-ups refused, without
	// touching PostgreSQL, because the client address's or the
	// organization's failure budget was spent.
	ThrottledAddress, ThrottledOrg uint64
}

type counters struct {
	malformed, l1Hits, l1Negative, l2Lookups, l2Hits, l2Errors, l3Lookups, l3Queries, l3Errors, purges, invalidated atomic.Uint64
	failures, throttledAddr, throttledOrg                                                                           atomic.Uint64
}

// Authenticator verifies credentials. It is safe for concurrent use.
type Authenticator struct {
	opts  Options
	log   *zap.Logger
	keys  *otter.Cache[[32]byte, *Principal] // L1: verified keys
	neg   *otter.Cache[[32]byte, struct{}]   // L1: unknown, revoked or expired keys
	orgs  *otter.Cache[uuid.UUID, bool]      // organizations seen by JWTs
	group singleflight.Group
	l2    *batcher // Redis reads of concurrent requests (batch.go)
	l3    *batcher // PostgreSQL look-ups of concurrent requests
	n     counters

	addrLimit, orgLimit ratelimit.Limit                 // failure budgets; zero: none
	spent               *otter.Cache[string, time.Time] // failure budgets known spent, until when
	failing             *otter.Cache[string, struct{}]  // failure budgets charged here lately: the ones checked
}

// New builds an Authenticator.
func New(opts Options) (*Authenticator, error) {
	if opts.Store == nil {
		return nil, errors.New("auth: Options.Store is required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opts.CacheTTL, DefaultCacheTTL)
	def(&opts.NegativeTTL, DefaultNegativeTTL)
	def(&opts.RedisTTL, DefaultRedisTTL)
	def(&opts.RedisTimeout, DefaultRedisTimeout)
	def(&opts.LookupTimeout, DefaultLookupTimeout)
	if opts.CacheSize <= 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.NegativeSize <= 0 {
		opts.NegativeSize = DefaultNegativeSize
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	a := &Authenticator{opts: opts, log: opts.Log.Named("auth"),
		addrLimit: perMinute(opts.FailuresPerMinutePerAddress), orgLimit: perMinute(opts.FailuresPerMinutePerOrg)}
	a.l2, a.l3 = newBatcher(a.readL2), newBatcher(a.lookupL3)
	var err error
	if a.keys, err = otter.New(&otter.Options[[32]byte, *Principal]{
		MaximumSize:      opts.CacheSize,
		ExpiryCalculator: otter.ExpiryWriting[[32]byte, *Principal](opts.CacheTTL),
	}); err != nil {
		return nil, err
	}
	if a.neg, err = otter.New(&otter.Options[[32]byte, struct{}]{
		MaximumSize:      opts.NegativeSize,
		ExpiryCalculator: otter.ExpiryWriting[[32]byte, struct{}](opts.NegativeTTL),
	}); err != nil {
		return nil, err
	}
	if a.orgs, err = otter.New(&otter.Options[uuid.UUID, bool]{
		MaximumSize:      opts.CacheSize,
		ExpiryCalculator: otter.ExpiryWriting[uuid.UUID, bool](opts.CacheTTL),
	}); err != nil {
		return nil, err
	}
	if a.failing, err = otter.New(&otter.Options[string, struct{}]{
		MaximumSize:      spentBudgets,
		ExpiryCalculator: otter.ExpiryWriting[string, struct{}](failureMemory),
	}); err != nil {
		return nil, err
	}
	if a.spent, err = otter.New(&otter.Options[string, time.Time]{
		MaximumSize: spentBudgets,
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[string, time.Time]) time.Duration {
			return time.Until(e.Value)
		}),
	}); err != nil {
		return nil, err
	}
	return a, nil
}

// Stats returns the look-up counters.
func (a *Authenticator) Stats() Stats {
	return Stats{
		Malformed: a.n.malformed.Load(), L1Hits: a.n.l1Hits.Load(), L1Negative: a.n.l1Negative.Load(),
		L2Lookups: a.n.l2Lookups.Load(), L2Hits: a.n.l2Hits.Load(), L2Errors: a.n.l2Errors.Load(), L3Lookups: a.n.l3Lookups.Load(), L3Queries: a.n.l3Queries.Load(),
		L3Errors: a.n.l3Errors.Load(), Purges: a.n.purges.Load(), Invalidated: a.n.invalidated.Load(),
		Failures: a.n.failures.Load(), ThrottledAddress: a.n.throttledAddr.Load(), ThrottledOrg: a.n.throttledOrg.Load(),
	}
}

// maxCredentialLen bounds what is parsed at all; JWTs we issue are far
// smaller, and a megabyte of dots must cost nothing.
const maxCredentialLen = 8 << 10

// Authenticate verifies cred (the bare key or token, without "Bearer ")
// and returns the principal. client is the caller's address, whose
// failure budget an API key that needs a database look-up is checked
// against and, if refused, charged to; the zero Addr (unknown) leaves only
// the organization's budget. ctx bounds any Redis and database work. A
// cached API key is verified without allocating.
//
// Errors: ErrUnauthenticated, ErrUnavailable, or a *ThrottledError
// (ErrThrottled) when a failure budget is spent.
func (a *Authenticator) Authenticate(ctx context.Context, cred []byte, client netip.Addr) (*Principal, error) {
	if len(cred) == 0 || len(cred) > maxCredentialLen {
		a.n.malformed.Add(1)
		return nil, ErrUnauthenticated
	}
	if len(cred) > 3 && cred[0] == 's' && cred[1] == 'k' && cred[2] == '_' {
		return a.authenticateKey(ctx, cred, client)
	}
	if a.opts.JWT != nil && looksLikeJWT(cred) {
		return a.authenticateJWT(ctx, cred)
	}
	a.n.malformed.Add(1)
	return nil, ErrUnauthenticated
}

func looksLikeJWT(b []byte) bool {
	dots := 0
	for _, c := range b {
		if c == '.' {
			dots++
		}
	}
	return dots == 2
}
