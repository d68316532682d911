-- Finishing a job, shared by every script that ends jobs (the worker's, PROMOTE's expiry and
-- CANCEL), so each finished job gets the same fields, expiry, failed-index entry, notification
-- and `recent` note. Needs the queue's keys (queue.lua) and the local TTL (result ttl, s).
--#include queue

-- Finish a job for good: final status, fields, expiry, and the pushed notification.
local FINISHED = {}               -- jobs this call finished, for the `recent` stream (noted)

local function finish(jid, status, now, ...)
  FINISHED[#FINISHED + 1] = jid
  local key = JOBP .. jid
  redis.call('HSET', key, 'status', status, 'finished_at', now, ...)
  if TTL > 0 then redis.call('EXPIRE', key, TTL) end
  if status == 'failed' then                 -- index failures (rare); trim what has expired
    redis.call('ZADD', FAILED, now, jid)
    if TTL > 0 then redis.call('ZREMRANGEBYSCORE', FAILED, '-inf', now - TTL * 1000) end
  end
  redis.call('PUBLISH', DONEP .. jid, status)
end

-- A script's reply, once the jobs it finished are noted in the queue's `recent` stream (one
-- entry per call, keys.py).
local function noted(reply)
  if #FINISHED > 0 then
    redis.call('XADD', RECENT, 'MAXLEN', '~', 100, '*', 'ids', cjson.encode(FINISHED))
  end
  return reply
end
