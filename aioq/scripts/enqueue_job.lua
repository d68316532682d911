-- Writing one job, shared by ENQUEUE and CRON. KEYS: the queue's (queue.lua). ARGV from `a`: job id, delay ms, eta epoch ms
-- (0: none), expires in ms (0: never), expires at epoch ms (0: never), task, queue, args, kwargs,
-- retries, timeout, priority (0-9: the stream it goes to; recorded when not 0), sig (the job's
-- signature, signing.py; recorded when not ""), trace (JSON of the trace context, tracing.py;
-- recorded when not ""). Returns 1 when written, 0 when the id
-- existed (then nothing is written: a retried enqueue cannot duplicate a job). A job due now is
-- stamped with the time of its stream entry id (Redis' clock), so it costs no TIME call; the
-- worker creates the consumer group if the stream is new (NOGROUP), at id 0, so nothing
-- enqueued first is missed.
--#include queue
if redis.replicate_commands then redis.replicate_commands() end
local clock = nil
local function time_ms()
  if not clock then clock = now_ms() end   -- one TIME per call, however many jobs
  return clock
end

local function enqueue_job(key, a)
  if redis.call('EXISTS', key) == 1 then return 0 end
  local jid = ARGV[a + 1]
  local delay, eta = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local status, stamp = 'queued', nil
  if delay > 0 or eta > 0 then
    local now = time_ms()
    local due = now + delay
    if eta > 0 then due = eta end
    if due > now then
      status, stamp = 'scheduled', now
      redis.call('ZADD', SCHEDULED, due, jid)
    end
  end
  local level = level_of(ARGV[a + 12])
  local stream = STREAMS[level]                          -- the stream of the job's priority
  if not stamp then
    stamp = tonumber(string.match(redis.call('XADD', stream, '*', 'id', jid), '^%d+'))
  end
  local expires_in, expires_at = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  if expires_in > 0 then expires_at = stamp + expires_in end
  redis.call('HSET', key, 'status', status, 'enqueued_at', stamp, 'attempts', 0,
             'task', ARGV[a + 6], 'queue', ARGV[a + 7], 'args', ARGV[a + 8],
             'kwargs', ARGV[a + 9], 'retries', ARGV[a + 10], 'timeout', ARGV[a + 11])
  if expires_at > 0 then redis.call('HSET', key, 'expires_at', expires_at) end
  if level > 0 then redis.call('HSET', key, 'priority', ARGV[a + 12]) end
  if ARGV[a + 13] ~= '' then redis.call('HSET', key, 'sig', ARGV[a + 13]) end
  if ARGV[a + 14] ~= '' then redis.call('HSET', key, 'trace', ARGV[a + 14]) end
  if status == 'scheduled' then redis.call('HSET', key, 'wait', 'delay') end  -- why it waits
  return 1
end
