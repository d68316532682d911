-- The hand-overs left in a queue's outbox for longer than ARGV[1] ms (their worker died, or
-- lost Redis, between finishing a job and telling its successors), at most ARGV[2] of them,
-- as handover.lua's {id, status, then, payload}. KEYS: the queue's (queue.lua). Each one
-- returned is stamped now, so another worker sweeping meanwhile leaves it for a while; one
-- whose record is gone (expired) leaves the outbox.
--#include handover
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', FLOWS, '-inf', now - tonumber(ARGV[1]),
                       'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  local h = nil
  if redis.call('EXISTS', JOBP .. id) == 1 then
    h = job_handover(id)
  elseif redis.call('EXISTS', FLOWP .. id) == 1 then
    h = join_handover(id)
  end
  if h then
    redis.call('ZADD', FLOWS, now, id)
    out[#out + 1] = h
  else
    redis.call('ZREM', FLOWS, id)
  end
end
return out
