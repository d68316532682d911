-- Hand every entry still pending for this consumer back to its stream at once (shutdown), then
-- remove the consumer. KEYS: the queue's streams, then its guard (keys.py). ARGV: group,
-- consumer. Returns how many jobs went back.
--#include helpers
local GROUP, CONSUMER = ARGV[1], ARGV[2]
local JOBP = tag_of(KEYS[1]) .. '{{KEY_JOB}}'
local n = 0
for k = 1, #KEYS - 1 do
local STREAM = KEYS[k]
while true do
  local p = redis.pcall('XPENDING', STREAM, GROUP, '-', '+', 500, CONSUMER)
  if type(p) ~= 'table' or p.err or #p == 0 then break end
  for _, row in ipairs(p) do
    local eid = row[1]
    local e = redis.call('XRANGE', STREAM, eid, eid)
    local jid = e[1] and e[1][2][1] == 'id' and e[1][2][2]
    if jid then
      local key = JOBP .. jid
      local status = redis.call('HGET', key, 'status')
      if status == 'running' then
        redis.call('HSET', key, 'status', 'queued')
        redis.call('HINCRBY', key, 'deliveries', -1)
      end
      if status == 'running' or status == 'queued' then
        redis.call('XADD', STREAM, '*', 'id', jid)
        n = n + 1
      end
    end
    redis.call('XACK', STREAM, GROUP, eid)
    redis.call('XDEL', STREAM, eid)
  end
end
redis.pcall('XGROUP', 'DELCONSUMER', STREAM, GROUP, CONSUMER)
end
return n
