-- Delete the jobs waiting for a place on their key (keyed.lua), up to ARGV[1] of them, and
-- their records; their waiters are woken and find the job gone. Jobs cancelled while they
-- waited leave the lists, their records expiring after ARGV[2] s (the result ttl) as any
-- finished job's. KEYS: the queue's (queue.lua).
-- Returns {list entries scanned, jobs deleted}; 0 entries: done. `aioq purge` runs it before
-- purging the streams, so no waiting job takes a place the purge frees.
if redis.replicate_commands then redis.replicate_commands() end
--#include keyed
local budget = tonumber(ARGV[1])
local scanned, jobs = 0, 0
for _, g in ipairs(redis.call('ZRANGE', KEYED, 0, budget - 1)) do
  if budget <= 0 then break end
  local wait = TAG .. '{{KEY_KEYWAIT}}' .. g
  local ids = redis.call('LPOP', wait, budget)
  if ids then
    for _, m in ipairs(ids) do
      local _, _, jid = keyed().unmember(m)              -- "<priority>:<places>:<job id>"
      local status = redis.pcall('HGET', JOBP .. jid, 'status')
      if status == 'queued' then
        redis.call('DEL', JOBP .. jid)
        redis.call('PUBLISH', DONEP .. jid, 'purged')
        jobs = jobs + 1
      elseif status == 'cancelled' and tonumber(ARGV[2]) > 0 then
        redis.call('EXPIRE', JOBP .. jid, ARGV[2])
      end
    end
    scanned = scanned + #ids
    budget = budget - #ids
  end
  if redis.call('EXISTS', wait) == 0 then redis.call('ZREM', KEYED, g) end
end
return {scanned, jobs}
