-- Enqueue one job or many. KEYS: the queue's (queue.lua), then one job key per job; ARGV: the
-- queue's limit (0: none, limit.lua), then the ENQUEUE_ARGS values of each job in turn.
-- Returns one outcome per job (enqueue_job.lua: 1, 0 or the id of the job holding its dedup
-- key), or, when the jobs it would write do not fit under the limit, { {size, recent id} }
-- (the queue's size and its newest `recent` entry, limit.lua) and writes nothing: the call's
-- jobs are written all or none.
--#include enqueue_job
local N, limit = {{ENQUEUE_ARGS}}, tonumber(ARGV[1])
if limit > 0 then
--#include limit
  -- what the call would write: jobs whose id is new and whose dedup key is free (a key
  -- claimed by an earlier job of the same call counts once)
  local new, claimed = 0, {}
  for j = OWN_KEYS, #KEYS do
    local a = 1 + (j - OWN_KEYS) * N
    if redis.call('EXISTS', KEYS[j]) == 0 then
      if ARGV[a + 18] == '' then
        new = new + 1
      else
        local d = dedup().of(ARGV[a + 18])
        if not claimed[d.lock] and not DEDUP.holder(d) then
          claimed[d.lock] = true
          new = new + 1
        end
      end
    end
  end
  local size = queue_size()
  if new > 0 and size + new > limit then return { {size, recent_id()} } end
end
local out = {}
for j = OWN_KEYS, #KEYS do
  out[#out + 1] = enqueue_job(KEYS[j], 1 + (j - OWN_KEYS) * N)
end
return out
