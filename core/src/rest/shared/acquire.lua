-- Asks for a slot for one request (see the module docs of `rest::shared`).
-- KEYS: 1 global slots, 2 global hold, 3 route -> bucket hash, 4 discovery lease.
-- ARGV: 1 key prefix, 2 major, 3 slot id, 4 global limit (0: not counted),
--       5 in-flight timeout ms, 6 poll ms.
-- Returns {1, 0, role, hash} when granted (role: 'bucket', 'discovery' or
-- 'unlimited'), {0, wait ms, reason} otherwise (reason: 'global', 'bucket', 'pending').
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix, major, id = ARGV[1], ARGV[2], ARGV[3]
local glimit, inflight, poll = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])

local function wait_for(key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #first < 2 then return 1 end
  local wait = tonumber(first[2]) - now
  if string.sub(first[1], 1, 1) == 'f' then wait = math.min(wait, poll) end
  return math.max(wait, 1)
end

if glimit > 0 then
  local held = redis.call('PTTL', KEYS[2])
  if held > 0 then return {0, held, 'global'} end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= glimit then
    return {0, wait_for(KEYS[1]), 'global'}
  end
end

local hash = redis.call('GET', KEYS[3])
local role, slots = 'unlimited', nil
if not hash then
  if not redis.call('SET', KEYS[4], id, 'NX', 'PX', inflight) then
    return {0, math.max(math.min(redis.call('PTTL', KEYS[4]), poll), 1), 'pending'}
  end
  role, hash = 'discovery', ''
elseif hash ~= '' then
  local meta = prefix .. ':bm:' .. hash .. ':' .. major
  slots = prefix .. ':bs:' .. hash .. ':' .. major
  local blocked = tonumber(redis.call('HGET', meta, 'blocked') or '0')
  if blocked > now then return {0, blocked - now, 'bucket'} end
  redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
  local capacity = 1
  if redis.call('HGET', meta, 'confirmed') == '1' then
    capacity = math.max(tonumber(redis.call('HGET', meta, 'limit') or '1'), 1)
  end
  if redis.call('ZCARD', slots) >= capacity then
    return {0, wait_for(slots), 'bucket'}
  end
  role = 'bucket'
end

local function hold(key)
  redis.call('ZADD', key, now + inflight, 'f' .. id)
  if redis.call('PTTL', key) < inflight + 60000 then
    redis.call('PEXPIRE', key, inflight + 60000)
  end
end
if slots then hold(slots) end
if glimit > 0 then hold(KEYS[1]) end
return {1, 0, role, hash}
