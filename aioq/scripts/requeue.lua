-- Shared by REQUEUE_DEAD and RETRY. KEYS: the queue's (queue.lua).
if redis.replicate_commands then redis.replicate_commands() end
--#include queue
--#include keyed
--#include history
local ACTIVE = {queued = true, scheduled = true, running = true}

-- Put a job back on its stream as a fresh attempt: queued, no deliveries held against it (the
-- poison counter), the last outcome cleared (its failure kept in `history`), no expiry of the
-- record while it waits (and no `expires_at`: an operator asked for it to run). `attempts`
-- keeps counting every start. A keyed job goes through its key's places (keyed.lua).
local function requeue(jid)
  local key = JOBP .. jid
  local last = redis.call('HMGET', key, 'error', 'exc_type', 'traceback', 'attempts',
                          'finished_at')
  if last[1] then
    remember(key, last[4], last[1], last[2], last[3], tonumber(last[5]) or now_ms())
  end
  redis.call('HDEL', key, 'error', 'exc_type', 'traceback', 'result', 'cancel', 'worker',
             'started_at', 'finished_at', 'expires_at', 'wait')
  redis.call('HSET', key, 'status', 'queued', 'deliveries', 0)
  redis.call('PERSIST', key)
  redis.call('ZREM', FAILED, jid)
  redis.call('ZREM', SCHEDULED, jid)
  local r = redis.call('HMGET', key, 'priority', 'task', 'keyed')
  local g, c, n = key_parse(r[2], r[3])
  if not g then
    redis.call('XADD', STREAMS[level_of(r[1])], '*', 'id', jid)
  else
    keyed().enter(jid, level_of(r[1]), g, keyed().cap(c, n), now_ms())  -- or it waits
  end
end
