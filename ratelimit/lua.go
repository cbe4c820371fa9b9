package ratelimit

import "github.com/redis/go-redis/v9"

// The scripts keep each budget in a string "level last" (see gcra.go), with
// last in microseconds of Redis TIME, and a PX expiry at the moment the
// budget is fully restored, when the key is worth nothing. Times are the
// server's, so the replicas' clocks never matter.
//
// They need effect replication (TIME before a write): the default since
// Redis 5; the guarded replicate_commands call covers 3.2 and 4.
const luaPrelude = `
if redis.replicate_commands then redis.replicate_commands() end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local epsilon = 1e-9

-- level returns the budget's level at now; an absent or unreadable value
-- is a full budget.
local function level(key, interval)
  local v = redis.call('GET', key)
  if not v then return 0 end
  local sp = string.find(v, ' ', 1, true)
  if not sp then return 0 end
  local l = tonumber(string.sub(v, 1, sp - 1))
  local last = tonumber(string.sub(v, sp + 1))
  if not l or not last then return 0 end
  local elapsed = now - last
  if elapsed > 0 then l = l - elapsed / interval end
  if l < 0 then l = 0 end
  return l
end

-- store saves a level taken at now; the key expires once it is restored
-- (capped near 35 years, so that no usage figure can make SET fail).
local function store(key, l, interval)
  local ttl = math.ceil(l * interval / 1000)
  if ttl < 1 then ttl = 1 end
  if ttl > 1099511627776 then ttl = 1099511627776 end
  redis.call('SET', key, string.format('%.17g %.17g', l, now), 'PX', string.format('%.0f', ttl))
end

local function remaining(l, burst)
  local r = math.floor(burst - l + epsilon)
  if r < 0 then return 0 end
  return r
end

-- whole rounds x up to an integer reply, capped at 2^53 so that a key deep
-- in debt cannot overflow Redis's conversion to a 64-bit integer.
local function whole(x)
  x = math.ceil(x)
  if x > 9007199254740992 then return 9007199254740992 end
  return x
end

local function shortfall(l, burst)
  local over = l + 1 - burst
  if over > epsilon then return over end
  return 0
end
`

// allowScript decides one request against both budgets of a key.
//
//	KEYS[1] request budget, KEYS[2] token budget (one hash slot)
//	ARGV[1] request interval µs (0: unlimited), ARGV[2] request burst
//	ARGV[3] token interval µs (0: unlimited),   ARGV[4] token burst
//
// It admits when one request fits and at least one token is left; it then
// spends the request and leaves the tokens for reserveScript and
// chargeScript. A rejection writes nothing. Reply, all integers:
//
//	{allowed 0|1, requests remaining, requests reset µs,
//	 tokens remaining, tokens reset µs, retry after µs}
var allowScript = redis.NewScript(luaPrelude + `
local ri, rb = tonumber(ARGV[1]), tonumber(ARGV[2])
local ti, tb = tonumber(ARGV[3]), tonumber(ARGV[4])

local rl, tl, rwait, twait = 0, 0, 0, 0
if ri > 0 then
  rl = level(KEYS[1], ri)
  rwait = shortfall(rl, rb) * ri
end
if ti > 0 then
  tl = level(KEYS[2], ti)
  twait = shortfall(tl, tb) * ti
end

local allowed = 0
if rwait == 0 and twait == 0 then
  allowed = 1
  if ri > 0 then
    rl = rl + 1
    store(KEYS[1], rl, ri)
  end
end

return {
  allowed,
  remaining(rl, rb), whole(rl * ri),
  remaining(tl, tb), whole(tl * ti),
  whole(math.max(rwait, twait)),
}
`)

// reserveScript sets tokens aside for a request allowScript admitted.
//
//	KEYS[1] request budget, KEYS[2] token budget (one hash slot)
//	ARGV[1] request interval µs (0: unlimited)
//	ARGV[2] token interval µs (> 0), ARGV[3] token burst, ARGV[4] tokens (> 0)
//
// It admits when the tokens fit the burst on top of what is spent and set
// aside, and then adds them to the level. A rejection gives back the
// request unit allowScript spent, so that a request refused for tokens has
// spent nothing. Reply, all integers:
//
//	{allowed 0|1, tokens remaining, tokens reset µs, retry after µs}
//
// A request larger than the burst never fits; its retry after is the time
// until the budget is full.
var reserveScript = redis.NewScript(luaPrelude + `
local ri = tonumber(ARGV[1])
local ti, tb, n = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])

local tl = level(KEYS[2], ti)
local allowed, wait = 0, 0
if n <= tb and tl + n - tb <= epsilon then
  allowed = 1
  tl = tl + n
  store(KEYS[2], tl, ti)
else
  wait = (tl + math.min(n, tb) - tb) * ti
  if ri > 0 then
    local rl = level(KEYS[1], ri) - 1
    if rl > 0 then
      store(KEYS[1], rl, ri)
    else
      redis.call('DEL', KEYS[1])
    end
  end
end

return {allowed, remaining(tl, tb), whole(tl * ti), whole(wait)}
`)

// chargeScript spends tokens from a token budget, past the burst if need
// be (debt, repaid as the budget refills); negative tokens give tokens
// back (a reservation larger than the usage), down to a full budget.
//
//	KEYS[1] token budget
//	ARGV[1] token interval µs (> 0), ARGV[2] tokens (not 0)
//
// Reply: the level after the charge, rounded up (an integer).
var chargeScript = redis.NewScript(luaPrelude + `
local ti, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local l = level(KEYS[1], ti) + n
if l > 0 then
  store(KEYS[1], l, ti)
else
  l = 0
  redis.call('DEL', KEYS[1])
end
return whole(l)
`)
