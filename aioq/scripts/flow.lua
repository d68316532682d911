-- Tell workflow steps of one queue how their predecessors ended (handover.py). KEYS: the
-- queue's (queue.lua). ARGV: 1 result ttl (s), then records of 8: kind ("start", "join" or
-- "unlock"),
-- id, on ("ok"/"fail"), pass ("value"/"id"/"none"), member index, and the predecessor's
-- status, id and payload (handover.lua). Every record may be applied any number of times
-- with the same effect, which is what makes a hand-over exactly once however often a crashed
-- worker's outbox is swept:
--   start  only a held step changes: it starts (with the value, or the failed job's id, as its
--          `input`, the first argument the worker gives it) when `on` matches the outcome,
--          and is cancelled otherwise (with the failure as its `cause` when one is upstream);
--   join   the member's outcome is kept under its index once (HSETNX), counted once; the
--          join fires once: at the last member, or the first failure unless in "collect" mode;
--   unlock a `unique_for` job finished (dedup.lua): its key (id) expires the window (member
--          index, ms) after its finish, if the job still holds it.
-- Whatever this finishes that has successors of its own goes into this queue's outbox in the
-- same call, and is returned as hand-overs for the caller to pass on.
if redis.replicate_commands then redis.replicate_commands() end
local TTL = tonumber(ARGV[1])
--#include finish
--#include handover
local now = now_ms()
local out = {}

local function start_held(jid, key, v, input)
  local level = level_of(v[4])
  local delay, eta = tonumber(v[5] or 0) or 0, tonumber(v[6] or 0) or 0
  local expires = tonumber(v[7] or 0) or 0
  redis.call('PERSIST', key)                        -- it lives as any job from now on
  redis.call('HDEL', key, 'wait', 'hold_delay', 'hold_eta', 'hold_expires')
  if input then redis.call('HSET', key, 'input', input) end
  if expires > 0 then redis.call('HSET', key, 'expires_at', now + expires) end
  local due = now + delay
  if eta > 0 then due = eta end
  if due > now then
    redis.call('HSET', key, 'status', 'scheduled', 'wait', 'delay', 'enqueued_at', now)
    redis.call('ZADD', SCHEDULED, due, jid)
  else
    redis.call('XADD', STREAMS[level], '*', 'id', jid)
    redis.call('HSET', key, 'status', 'queued', 'enqueued_at', now)
  end
end

local function cancel_held(jid, key, has_then, cause)
  THEN_KNOWN = has_then
  redis.call('HDEL', key, 'wait')
  local ok, c = pcall(cjson.decode, cause)
  if cause ~= '' and ok and type(c) == 'table' then
    local why = 'step ' .. tostring(c.task) .. ' (job ' .. tostring(c.step) .. ') failed: '
                .. tostring(c.exc_type) .. ': ' .. tostring(c.error)
    finish(jid, 'cancelled', now, 'error', why, 'exc_type', tostring(c.exc_type),
           'traceback', tostring(c.traceback), 'cause', cause)
  else
    cause = ''
    finish(jid, 'cancelled', now)
  end
  return cause
end

for i = 2, #ARGV, 8 do
  local kind, id, on, pass, idx = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local st, src, payload = ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  local upstream_failed = st == 'failed' or (st == 'cancelled' and payload ~= '')
  if kind == 'start' then
    local key = JOBP .. id
    local v = redis.pcall('HMGET', key, 'status', 'wait', 'then', 'priority', 'hold_delay',
                          'hold_eta', 'hold_expires')
    if not v.err and v[1] == 'scheduled' and v[2] == 'workflow' then
      if (on == 'ok' and st == 'succeeded') or (on == 'fail' and st == 'failed') then
        local input = nil
        if pass == 'value' then input = payload elseif pass == 'id' then input = cjson.encode(src) end
        start_held(id, key, v, input)
      else
        local cause = ''
        if on == 'ok' and upstream_failed then cause = payload end
        cause = cancel_held(id, key, v[3] ~= false, cause)
        if v[3] then out[#out + 1] = {id, 'cancelled', v[3], cause} end
      end
    end
  elseif kind == 'join' then
    local key = FLOWP .. id
    local g = redis.pcall('HMGET', key, 'total', 'fired', 'mode', 'then')
    if not g.err and g[1] then
      local val = payload
      if st ~= 'succeeded' then
        if payload == '' then payload = cjson.encode({step = src, cancelled = true}) end
        val = '!' .. payload
      end
      local done
      if redis.call('HSETNX', key, 'r:' .. idx, val) == 1 then
        done = redis.call('HINCRBY', key, 'done', 1)
      else
        done = tonumber(redis.call('HGET', key, 'done')) or 0
      end
      if not g[2] then
        local fire = nil
        if st ~= 'succeeded' and g[3] ~= 'collect' then
          fire = 'cancelled'
          if upstream_failed then fire = 'failed' end
        elseif done >= (tonumber(g[1]) or 0) then
          fire = 'succeeded'
        end
        if fire then
          redis.call('HSET', key, 'fired', fire)
          if fire == 'failed' then redis.call('HSET', key, 'cause', payload) end
          if TTL > 0 then redis.call('EXPIRE', key, TTL) end
          redis.call('PUBLISH', DONEP .. id, fire)
          if g[4] then
            redis.call('ZADD', FLOWS, now, id)
            out[#out + 1] = join_handover(id)
          end
        end
      end
    end
  elseif kind == 'unlock' then
    local lock = TAG .. '{{KEY_UNIQUE}}' .. id
    if redis.pcall('GET', lock) == src then
      local at = (tonumber(redis.call('HGET', JOBP .. src, 'finished_at')) or now) +
                 (tonumber(idx) or 0)
      if at <= now then redis.call('DEL', lock) else redis.call('PEXPIREAT', lock, at) end
    end
  end
end
return noted(out)
