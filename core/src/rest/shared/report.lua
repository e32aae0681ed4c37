-- Hands back the slot of one request (see the module docs of `rest::shared`).
-- KEYS: 1 global slots, 2 global hold, 3 route -> bucket hash, 4 discovery lease.
-- ARGV: 1 key prefix, 2 major, 3 slot id, 4 bucket hash it was granted in ('' none),
--   5 holds a global slot (1/0), 6 outcome ('answered', 'lost', 'cancelled'),
--   7 answer's bucket hash ('' none), 8 limit, 9 remaining, 10 reset-after ms
--   (-1: absent), 11 counted by Discord (1/0: a 429 is not), 12 hold the bucket ms,
--   13 hold the global limit ms (-1: no), 14 the route has no bucket (1/0),
--   15 how long learned facts are kept (ms).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix, major, id, granted = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local outcome, answered = ARGV[6], ARGV[7]
local limit, remaining, reset = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local counted, hold_bucket, hold_global = ARGV[11] == '1', tonumber(ARGV[12]), tonumber(ARGV[13])
local ttl = tonumber(ARGV[15])

-- Keeps `key` at least `ms` more (never shortens what an in-flight slot needs).
local function keep(key, ms)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end

if redis.call('GET', KEYS[4]) == id then redis.call('DEL', KEYS[4]) end

if ARGV[5] == '1' then
  redis.call('ZREM', KEYS[1], 'f' .. id)
  if outcome ~= 'cancelled' then
    redis.call('ZADD', KEYS[1], now + 1020, 'a' .. id)
    keep(KEYS[1], 60000)
  end
end
if hold_global > 0 and redis.call('PTTL', KEYS[2]) < hold_global then
  redis.call('SET', KEYS[2], '1', 'PX', hold_global)
end

if answered ~= '' then
  redis.call('SET', KEYS[3], answered, 'PX', ttl)
elseif ARGV[14] == '1' then
  redis.call('SET', KEYS[3], '', 'PX', ttl)
end

if granted == '' and outcome == 'cancelled' then
  -- An acquire whose reply was lost: its slot is in the route's bucket, if any.
  granted = redis.call('GET', KEYS[3]) or ''
end
if granted ~= '' then
  redis.call('ZREM', prefix .. ':bs:' .. granted .. ':' .. major, 'f' .. id)
end
local target = answered
if target == '' then target = granted end
if outcome == 'cancelled' or target == '' then return 1 end

local meta = prefix .. ':bm:' .. target .. ':' .. major
local slots = prefix .. ':bs:' .. target .. ':' .. major
local window = tonumber(redis.call('HGET', meta, 'window') or '0')
if reset >= 0 then
  window = math.max(window, reset)
  redis.call('HSET', meta, 'window', window)
end
if limit >= 0 then
  redis.call('HSET', meta, 'limit', limit)
  if remaining >= 0 and remaining + 1 >= limit then redis.call('HSET', meta, 'confirmed', '1') end
end
if counted then
  local release = now + math.max(math.max(reset, 0), window) + 5
  redis.call('ZADD', slots, release, 'a' .. id)
  keep(slots, release - now + 60000)
end
local blocked = tonumber(redis.call('HGET', meta, 'blocked') or '0')
if remaining == 0 and reset >= 0 then blocked = math.max(blocked, now + reset) end
if hold_bucket >= 0 then blocked = math.max(blocked, now + hold_bucket) end
if blocked > now then redis.call('HSET', meta, 'blocked', blocked) end
keep(meta, ttl)
return 1
