package budget

import "github.com/redis/go-redis/v9"

// A budget's counter is a Redis hash: field "r" holds its generation (a
// random number the replica that rebuilt it from the request log chose),
// every other field is a bucket number (window.go) and its spend in
// micro-USD, reservations in flight and replicas' leases included. A
// missing hash means Redis lost it (flushed, restarted, expired): it is
// rebuilt from PostgreSQL (Enforcer.rebuild) before anything is admitted
// against it. A lease or correction remembers the generation it was
// counted in, and is given back or added only to that generation: a
// rebuilt counter never loses what a lost one held. All budgets of an
// organization share a hash tag, so one script call touches them all on
// one Redis Cluster node. Lua numbers are doubles: exact up to 2^53
// micro-USD ($9e9), far beyond store.MaxBudget.

// leaseScript reserves one request's amount from several budgets, all or
// nothing, and leases this replica a chunk beyond it (lease.go).
//
//	KEYS the budgets' hashes
//	ARGV[1] the amount to reserve (>= 0), ARGV[2] the lease divisor
//	then per key (8): limit, lowest live bucket, bucket to add to, TTL in
//	ms, most to lease beyond the amount, and the lease this replica gives
//	back first: its bucket and amount (0: none), then its generation
//
// A lease given back is subtracted from its bucket if that bucket is still
// live and the generation is the counter's. The budget then refuses if it
// is exhausted or the amount would take it over, else adds the amount
// plus the lease: min(the most asked, what is left after the amount /
// divisor). Numbers go back to Redis as integer text (Lua would write
// large ones in exponent form). So what a replica holds shrinks as the budget nears its limit,
// and the counter, leases included, never exceeds the limit.
//
// Replies {1, spent, lease, generation (per key)...} (spent after),
// {0, spent..., refusing index} (spent before; leases given back stay
// given back), or {-1, missing index...} when a hash must be rebuilt first
// (nothing changed).
var leaseScript = redis.NewScript(`
local amount, div = tonumber(ARGV[1]), tonumber(ARGV[2])
local missing = {-1}
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then missing[#missing + 1] = i end
end
if #missing > 1 then return missing end
local spent, gens, refused = {}, {}, 0
for i = 1, #KEYS do
  local a = 2 + (i - 1) * 8
  local limit, low = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local gen = redis.call('HGET', KEYS[i], 'r')
  gens[i] = tonumber(gen)
  local back = tonumber(ARGV[a + 7])
  if back > 0 and gen == ARGV[a + 8] and tonumber(ARGV[a + 6]) >= low then
    redis.call('HINCRBY', KEYS[i], ARGV[a + 6], '-' .. ARGV[a + 7])
  end
  local h = redis.call('HGETALL', KEYS[i])
  local s = 0
  for j = 1, #h, 2 do
    if h[j] ~= 'r' then
      if tonumber(h[j]) < low then redis.call('HDEL', KEYS[i], h[j]) else s = s + tonumber(h[j + 1]) end
    end
  end
  spent[i] = s
  if refused == 0 and (s >= limit or s + amount > limit) then refused = i end
end
if refused > 0 then
  local out = {0}
  for i = 1, #KEYS do out[#out + 1] = spent[i] end
  out[#out + 1] = refused
  return out
end
local out = {1}
for i = 1, #KEYS do
  local a = 2 + (i - 1) * 8
  local limit = tonumber(ARGV[a + 1])
  local extra = math.floor((limit - spent[i] - amount) / div)
  local most = tonumber(ARGV[a + 5])
  if extra > most then extra = most end
  if extra < 0 then extra = 0 end
  if amount + extra ~= 0 then redis.call('HINCRBY', KEYS[i], ARGV[a + 3], string.format('%d', amount + extra)) end
  redis.call('PEXPIRE', KEYS[i], ARGV[a + 4])
  out[#out + 1] = spent[i] + amount + extra
  out[#out + 1] = extra
  out[#out + 1] = gens[i]
end
return out
`)

// adjustScript adds a correction to one budget's counter: a lease given
// back (negative) or a request's cost beyond what it reserved (positive).
//
//	KEYS[1] the budget's hash
//	ARGV[1] generation, ARGV[2] bucket, ARGV[3] lowest live bucket,
//	ARGV[4] the amount (micro-USD, signed)
//
// It changes nothing unless the counter is of that generation and the
// bucket is still live (a lost counter's rebuild reads the request's row;
// a bucket out of the window no longer counts). Replies 1 if applied.
var adjustScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'r') ~= ARGV[1] or tonumber(ARGV[2]) < tonumber(ARGV[3]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[2], ARGV[4])
return 1
`)

// initScript: KEYS[1] a budget's hash; ARGV the bucket, the spend read
// from PostgreSQL, the TTL in ms, a new generation. Creates the hash only
// if it is still missing: of replicas rebuilding at once, the first one's
// sum stands.
var initScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'r', ARGV[4], ARGV[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
`)
