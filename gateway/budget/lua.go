package budget

import "github.com/redis/go-redis/v9"

// A budget's counter is a Redis hash: field "r" marks it as rebuilt from
// the request log, every other field is a bucket number (window.go) and
// its spend in micro-USD, reservations in flight included. A missing hash
// means Redis lost it (flushed, restarted, expired): it is rebuilt from
// PostgreSQL (Enforcer.rebuild) before anything is admitted against it.
// All budgets of an organization share a hash tag, so one script call
// touches them all on one Redis Cluster node. Lua numbers are doubles:
// exact up to 2^53 micro-USD ($9e9), far beyond store.MaxBudget.

// reserveScript: KEYS the budgets' hashes; ARGV[1] the amount to reserve,
// then per key: limit, lowest live bucket, bucket to add to, TTL in ms.
// All or nothing: refuses if any budget is exhausted or would go over,
// else adds the amount to every one. Replies {1, spent...} (spent after),
// {0, spent..., refusing index} (spent before), or {-1, missing index...}
// when a hash must be rebuilt first (nothing changed).
var reserveScript = redis.NewScript(`
local amount = tonumber(ARGV[1])
local missing = {-1}
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then missing[#missing + 1] = i end
end
if #missing > 1 then return missing end
local spent, refused = {}, 0
for i = 1, #KEYS do
  local a = 1 + (i - 1) * 4
  local limit, low = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
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
  local a = 1 + (i - 1) * 4
  if amount ~= 0 then redis.call('HINCRBY', KEYS[i], ARGV[a + 3], amount) end
  redis.call('PEXPIRE', KEYS[i], ARGV[a + 4])
  out[#out + 1] = spent[i] + amount
end
return out
`)

// settleScript: KEYS the budgets' hashes; ARGV[1] the correction (actual
// cost minus what was reserved), then per key: lowest live bucket,
// bucket the reservation went to. A hash that is gone (lost since the
// reservation) is left alone: its rebuild reads the request's row.
// Replies the spend of each (0 for a lost one).
var settleScript = redis.NewScript(`
local delta = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local a = 1 + (i - 1) * 2
  local s = 0
  if redis.call('EXISTS', KEYS[i]) == 1 then
    if delta ~= 0 then redis.call('HINCRBY', KEYS[i], ARGV[a + 2], delta) end
    local low = tonumber(ARGV[a + 1])
    local h = redis.call('HGETALL', KEYS[i])
    for j = 1, #h, 2 do
      if h[j] ~= 'r' and tonumber(h[j]) >= low then s = s + tonumber(h[j + 1]) end
    end
  end
  out[i] = s
end
return out
`)

// initScript: KEYS[1] a budget's hash; ARGV the bucket, the spend read
// from PostgreSQL, the TTL in ms. Creates the hash only if it is still
// missing: of replicas rebuilding at once, the first one's sum stands.
var initScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'r', 1, ARGV[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
`)
