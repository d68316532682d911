-- Requeue dead-letter entries. KEYS: the queue's (queue.lua). ARGV: dead-letter entry ids. Returns one
-- outcome per id: "requeued" (the entry is deleted), "missing", or why it stays. The job record
-- is reset when it exists; when it has expired it is recreated from the entry's `job` copy.
--#include requeue
local out = {}
for i = 1, #ARGV do
  local eid, outcome = ARGV[i], nil
  local e = redis.call('XRANGE', DEAD, eid, eid)[1]
  if not e then
    outcome = 'missing'
  else
    local jid = field(e[2], 'id')
    if not jid or jid == '' then
      outcome = 'the entry names no job id'
    else
      local key = JOBP .. jid
      local kind = redis.call('TYPE', key)['ok']
      if kind == 'none' then
        -- the copy was taken when the entry was buried (its status is of that moment)
        local ok, rec = pcall(cjson.decode, field(e[2], 'job') or 'null')
        if ok and type(rec) == 'table' and #rec > 0 and #rec % 2 == 0 and field(rec, 'task')
           and type(redis.pcall('HSET', key, unpack(rec))) == 'number' then
          outcome = 'requeued'
        else
          outcome = 'the job record is gone and the entry holds no copy of it'
        end
      elseif kind == 'hash' then
        local rec = redis.call('HMGET', key, 'status', 'task')
        if ACTIVE[rec[1]] then
          outcome = 'the job is ' .. rec[1]
        elseif not rec[2] then
          outcome = 'the job record names no task'
        else
          outcome = 'requeued'
        end
      else
        outcome = 'key ' .. key .. ' is a ' .. kind .. ', not a job record'
      end
      if outcome == 'requeued' then
        requeue(jid)
        redis.call('XDEL', DEAD, eid)
      end
    end
  end
  out[i] = outcome
end
return out
