-- Bounded queues (App(queue_limits=...)): how many jobs a queue holds, for the enqueue script.
-- A queue holds every job in it that has not finished: its streams' entries (queued jobs, and
-- running ones, whose entry goes when they finish) and its scheduled set (delays, retry
-- backoff, rate-limit waits). Eleven O(1) reads, no scan. Held workflow steps are in neither
-- and count once they start. Needs the queue's keys (queue.lua); included where a limit is
-- set, so a call without one creates none of these functions.
local function queue_size()
  local n = redis.call('ZCARD', SCHEDULED)
  for p = 0, PRIORITIES - 1 do n = n + redis.call('XLEN', STREAMS[p]) end
  return n
end

-- The id of the queue's newest `recent` entry ("0-0": none): a producer waiting for room
-- reads the entries after it (jobs finishing), so no finish between its try and its wait is
-- missed.
local function recent_id()
  local r = redis.call('XREVRANGE', RECENT, '+', '-', 'COUNT', 1)
  if r[1] then return r[1][1] end
  return '0-0'
end
