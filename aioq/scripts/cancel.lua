-- Cancel a job. KEYS: the queue's (queue.lua), the job. ARGV: job id, result ttl (s). Returns 1 when a queued or
-- scheduled job was cancelled (it will never start: its stream entry is dropped at delivery),
-- 2 when a running job was flagged and its workers were signalled, 0 when it had finished,
-- -1 when there is no such job.
if redis.replicate_commands then redis.replicate_commands() end
local TTL = tonumber(ARGV[2])
--#include finish
local JOB = KEYS[OWN_KEYS]
local status = redis.call('HGET', JOB, 'status')
if not status then return -1 end
if status == 'queued' or status == 'scheduled' then
  redis.call('ZREM', SCHEDULED, ARGV[1])
  local k = redis.call('HMGET', JOB, 'task', 'keyed', 'priority')
  local g, c, n = key_parse(k[1], k[2])
  local cap, level = g and keyed().cap(c, n), level_of(k[3])
  local waiting = g and status == 'queued'
                  and not redis.call('LPOS', TAG .. '{{KEY_KEYRUN}}' .. g,
                                     keyed().member(ARGV[1], level, cap))
  KEY_KNOWN = g and {g, cap, level} or false
  finish(ARGV[1], 'cancelled', now_ms())
  -- waiting for a place on its key: it stays in its key's list until its turn (keyed.lua), and
  -- its record until then, so that turn finds it cancelled (start.lua expires it)
  if waiting then redis.call('PERSIST', JOB) end
  return noted(1)
elseif status == 'running' then
  redis.call('HSET', JOB, 'cancel', '1')
  redis.call('PUBLISH', TAG .. '{{KEY_CANCEL}}', ARGV[1])
  return 2
end
return 0
