-- Retry failed jobs. KEYS: the queue's (queue.lua). ARGV: job ids. Returns one outcome per id: "requeued",
-- "missing", "not a job record", or the status of a job that is not failed (left alone).
--#include requeue
local out = {}
for i = 1, #ARGV do
  local st = redis.pcall('HGET', JOBP .. ARGV[i], 'status')
  if type(st) == 'table' and st.err then
    out[i] = 'not a job record'
  elseif not st then
    out[i] = 'missing'
  elseif st ~= 'failed' then
    out[i] = st
  else
    requeue(ARGV[i])
    out[i] = 'requeued'
  end
end
return out
