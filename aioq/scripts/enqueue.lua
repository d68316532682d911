-- Enqueue one job or many. KEYS: the queue's (queue.lua), then one job key per job; ARGV: the
-- ENQUEUE_ARGS values of each job in turn. Returns one 1/0 per job.
--#include enqueue_job
local out = {}
for j = OWN_KEYS, #KEYS do
  out[#out + 1] = enqueue_job(KEYS[j], (j - OWN_KEYS) * {{ENQUEUE_ARGS}})
end
return out
