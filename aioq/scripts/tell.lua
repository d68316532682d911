-- Telling workflow steps and joins of this queue how a predecessor ended, and passing on
-- what that finishes in turn (flow.lua, and complete.lua for successors on the job's own
-- queue). Needs finish.lua (TTL) and handover.lua. Every telling may be repeated with the same
-- effect (flow.lua says why); `now` is the calling script's clock.
--#include handover

local function start_held(jid, key, v, input, now)
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
    redis.call('HSET', key, 'status', 'queued', 'enqueued_at', now)
    local g, c, n = key_parse(v[8], v[9])
    if not g then
      redis.call('XADD', STREAMS[level], '*', 'id', jid)
    else
      keyed().enter(jid, level, g, keyed().cap(c, n), now)   -- or it waits for a place
    end
  end
end

local function cancel_held(jid, key, has_then, cause, now)
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

-- Tell step or join `id` (kind "start" or "join") that predecessor `src` ended with `st` and
-- `payload`; what this finishes that has successors is appended to `out` as hand-overs. Kind
-- "unlock" is no step: `src` is a `unique_for` job that finished (dedup.lua), `id` its key and
-- `idx` the window (ms); the key, if `src` still holds it, expires the window after the finish.
local function tell(kind, id, on, pass, idx, st, src, payload, now, out)
  local upstream_failed = st == 'failed' or (st == 'cancelled' and payload ~= '')
  if kind == 'start' then
    local key = JOBP .. id
    local v = redis.pcall('HMGET', key, 'status', 'wait', 'then', 'priority', 'hold_delay',
                          'hold_eta', 'hold_expires', 'task', 'keyed')
    if not v.err and v[1] ~= 'scheduled' and redis.call('ZSCORE', FLOWS, id) then
      out[#out + 1] = job_handover(id)              -- finished, not yet passed on: again
    elseif not v.err and v[1] == 'scheduled' and v[2] == 'workflow' then
      if (on == 'ok' and st == 'succeeded') or (on == 'fail' and st == 'failed') then
        local input = nil
        if pass == 'value' then input = payload elseif pass == 'id' then input = cjson.encode(src) end
        start_held(id, key, v, input, now)
      else
        local cause = ''
        if on == 'ok' and upstream_failed then cause = payload end
        cause = cancel_held(id, key, v[3] ~= false, cause, now)
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
      if g[2] and g[4] and redis.call('ZSCORE', FLOWS, id) then
        out[#out + 1] = join_handover(id)           -- fired, not yet passed on: again
      elseif not g[2] then
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

-- Pass hand-over h ({id, status, then, payload}) on: the successors on this queue are told here,
-- and so are theirs in turn, as far as they stay on this queue; what goes to other queues is
-- appended to `remote` ({id, status, those successors' then, payload}) for the caller to tell
-- there. A hand-over told entirely here leaves the outbox here.
local function pass_on(h, now, remote)
  local work = {h}
  local n = 1
  while n <= #work do
    local w = work[n]
    n = n + 1
    local ok, acts = pcall(cjson.decode, w[3])
    local far = {}
    if ok and type(acts) == 'table' then
      for _, a in ipairs(acts) do
        if type(a) == 'table' and a.q == QUEUE then
          tell(a.k, a.id, a.on or '', a.pass or '', a.i or 0, w[2], w[1], w[4], now, work)
        else
          far[#far + 1] = a
        end
      end
    end
    if #far == 0 then
      redis.call('ZREM', FLOWS, w[1])
    else
      remote[#remote + 1] = {w[1], w[2], cjson.encode(far), w[4]}
    end
  end
end
