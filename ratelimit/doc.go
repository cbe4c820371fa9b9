// Package ratelimit enforces each API key's requests and tokens per minute,
// atomically in Redis (GCRA on Redis server time) so that every gateway
// replica shares one budget, with an in-process limiter for single-instance
// mode and for when Redis is unreachable.
//
// # Budgets
//
// A Limit is Rate units per Period with a Burst; PerMinute(n) allows the
// whole minute's n at once (Burst n) and then refills one unit every
// minute/n, so a minute never admits more than 2n (the burst plus a minute's
// refill). A zero Limit is unlimited.
//
// Limiter.Allow decides one request against a key's request budget and
// token budget in one Lua script, one round trip: it admits when a request
// unit is left and at least one token is left, and spends the request unit.
// It runs before the request body is read, so malformed requests count.
// Limiter.Reserve then sets the request's token estimate aside once the
// body is known (the gateway's estimate is the prompt's tokens plus
// max_tokens, or a configured default), admitting only if it fits on top of
// what is spent and set aside; a refusal gives the request unit back, so a
// rejected request spends nothing and a client retrying a 429 is not
// counted twice. Limiter.Settle ends the request with the usage the
// provider reported, charging usage - estimate in one atomic step: a
// request that used less gives the rest back, a failed one gives all of it
// back.
//
// So concurrent requests cannot together set aside more than the budget
// (20 requests of 70 tokens at once on 300 tokens per minute: 4 admitted);
// what they can overspend is their usage beyond their estimates. That
// overspend is debt: Settle takes the budget below empty (the GCRA arrival
// time moves on by tokens×interval, past the burst) and Allow rejects the
// key until it is repaid at the token rate. Usage is therefore reconciled
// exactly. The limiter never cuts a request in flight: a stream that
// exhausts the budget midway is charged in full when it ends and its debt
// holds back the key's next requests. A reservation larger than the whole
// Burst never fits; Reserve refuses it like any other, and the caller
// should say that retrying cannot help.
//
// All times come from Redis TIME inside the script, so the replicas' clocks
// do not matter. Redis keys are Prefix + ":{" + key + "}:r" and ":t" (one
// Cluster hash slot per key) and expire when their budget is fully
// restored. So a key must not be empty or begin with "}": its hash tag
// would be empty, and on a Redis Cluster its two budgets would fall in
// different slots, which the scripts cannot touch together (CROSSSLOT, a
// Redis failure to the Limiter). Every script touches one slot, so a
// Cluster serves the Limiter as one node does; the tests run each script
// on a real one.
//
// # Leases
//
// With Options.Lease, a request budget with a Burst of at least 128 is
// taken from Redis a lease at a time: one script call spends up to
// Burst/64 units (fewer if fewer are left) and this instance admits them
// locally, without I/O, until they run out or expire (after at most a
// second). The replicas together never admit more than the budget; unused
// leased units are lost, so each replica may under-admit by up to a lease
// per lease lifetime. Calls with a token limit, and smaller budgets, take
// their round trips per request as without leases (Allow, then Reserve).
// Remaining in the headers is approximate between leases. See Options.Lease and lease.go.
//
// # When Redis fails
//
// Every Redis call has a timeout (Options.Timeout, DefaultTimeout). After
// an error or a timeout the Limiter stops calling Redis for a cooldown
// (Options.Cooldown, DefaultCooldown), then lets one call probe; so a dead or stalled Redis delays only the
// calls in flight when it fails and one probe per cooldown, never every
// request. Meanwhile:
//
//   - FailLocal (default): each instance decides with its own in-process
//     limiter (Source "local"), same algorithm, no error, admitting its
//     share of each budget; see Sharing a budget without Redis.
//   - FailClosed: Allow, Reserve and Settle return an error wrapping
//     ErrUnavailable; the gateway answers 503.
//
// A call that timed out may still be applied by Redis later (it spends a
// request unit or its tokens), which errs on the strict side.
//
// Each switch is logged once (a warning on the way out, an info on the way
// back) and counted in Stats. With no Redis client at all (single-instance
// mode) every decision is local and no fail mode applies.
//
// # Sharing a budget without Redis
//
// Limiter.Run, which the owner runs for the Limiter's lifetime, adds the
// instance to a sorted set in Redis (Prefix + ":replicas", scored with
// Redis TIME) every Options.Heartbeat and counts the members seen within
// three heartbeats: N, the live replicas (Stats.Replicas). When Redis goes
// away N stays as last counted. Every decision Redis makes is also written
// to the local limiter: the level Redis reported for the key's budgets.
// The fallback starts from there, not from a full budget, and charges this
// instance's spending N times, so that each replica admits 1/N of what it
// last saw left and 1/N of the refill; a key whose budget was spent just
// before the outage stays refused. The headers' Limit stays the whole
// budget; Remaining is this replica's part.
//
// The bound: for a budget of Burst B and Rate R per Period, during an
// outage of length T the replicas together admit at most
//
//	B - L + R×T/Period units,
//
// where L is the smallest level Redis last reported to any replica for the
// key (0 for a replica that never saw it: a whole share). That is what
// Redis itself would have allowed over the window from the least-spent
// state a replica last saw. One exception rounds up: a replica whose share B/N is
// smaller than one request's cost (1 for requests; its reservation for
// tokens) still admits one request into a fully restored share, so such
// small budgets may admit up to N requests more. The bound assumes every
// replica counted the same N: a replica started during the outage counts
// only itself and admits a whole budget, and replicas that died just
// before are still counted (fewer admissions, never more). Spending during
// the outage is not written back to Redis; when Redis returns, decisions
// follow its state again (an empty Redis: whole budgets).
//
// # Headers
//
// Decision.Headers writes OpenAI's x-ratelimit-{limit,remaining,reset}-
// {requests,tokens} headers, with resets in OpenAI's format ("20ms", "1s",
// "6m0s"), and Retry-After in whole seconds when the request is rejected.
package ratelimit
