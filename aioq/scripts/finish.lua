-- Finishing a job, shared by every script that ends jobs (the worker's, PROMOTE's expiry and
-- CANCEL), so each finished job gets the same fields, expiry, failed-index entry, notification
-- and `recent` note, and gives back the place a keyed job held (keyed.lua), which the next job
-- waiting on its key takes in the same call. Needs the queue's keys (queue.lua) and the local
-- TTL (result ttl, s).
--#include queue
--#include keyed

-- Finish a job for good: final status, fields, expiry, and the pushed notification.
local FINISHED = {}               -- jobs this call finished, for the `recent` stream (noted)
-- A job of a workflow (its record has `then`, the successors to tell: canvas.py) goes into
-- the queue's hand-over outbox in the same script that finishes it, so no crash between the
-- finish and the hand-over can lose the transition (handover.py). A caller that has read the
-- record sets THEN_KNOWN (true/false) first, which saves the HEXISTS on the hot path.
local THEN_KNOWN = nil
-- The same for the job's key: false (none) or {group, its places, its priority}, else finish
-- reads the record.
local KEY_KNOWN = nil

local function finish(jid, status, now, ...)
  FINISHED[#FINISHED + 1] = jid
  local key = JOBP .. jid
  redis.call('HSET', key, 'status', status, 'finished_at', now, ...)
  if TTL > 0 then redis.call('EXPIRE', key, TTL) end
  local handed = THEN_KNOWN
  THEN_KNOWN = nil
  if handed == nil then handed = redis.call('HEXISTS', key, 'then') == 1 end
  if handed then redis.call('ZADD', FLOWS, now, jid) end
  if status == 'failed' then                 -- index failures (rare); trim what has expired
    redis.call('ZADD', FAILED, now, jid)
    if TTL > 0 then redis.call('ZREMRANGEBYSCORE', FAILED, '-inf', now - TTL * 1000) end
  end
  -- The notification carries the outcome so a waiter needs no read (job.py): "<status>
  -- <result JSON>" for succeeded, "<status> {error, exc_type, traceback}" (JSON) for the
  -- other outcomes with an error, bare "<status>" when there is nothing to carry or it is
  -- over 64 KB (the waiter reads the record then; the record stays the source of truth).
  local msg, f = status, {...}
  if status == 'succeeded' then
    for i = 1, #f, 2 do
      if f[i] == 'result' and #f[i + 1] <= 65536 then msg = status .. ' ' .. f[i + 1] end
    end
  elseif #f > 0 then
    local o = {}
    for i = 1, #f, 2 do
      if f[i] == 'error' or f[i] == 'exc_type' or f[i] == 'traceback' or f[i] == 'cause' then
        o[f[i]] = f[i + 1]
      end
    end
    local enc = cjson.encode(o)
    if #enc <= 65536 then msg = status .. ' ' .. enc end
  end
  redis.call('PUBLISH', DONEP .. jid, msg)
  local k = KEY_KNOWN
  KEY_KNOWN = nil
  if k == nil then
    local r = redis.call('HMGET', key, 'task', 'keyed', 'priority')
    local g, c, n = key_parse(r[1], r[2])
    k = g and {g, keyed().cap(c, n), level_of(r[3])} or false
  end
  if k then keyed().release(jid, k[3], k[1], k[2], now) end
end

-- A script's reply, once the jobs it finished are noted in the queue's `recent` stream (one
-- entry per call, keys.py).
local function noted(reply)
  if #FINISHED > 0 then
    redis.call('XADD', RECENT, 'MAXLEN', '~', 100, '*', 'ids', cjson.encode(FINISHED))
  end
  return reply
end
