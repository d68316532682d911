-- Writing one job, shared by ENQUEUE and CRON. KEYS: the queue's (queue.lua). ARGV from `a`: job id, delay ms, eta epoch ms
-- (0: none), expires in ms (0: never), expires at epoch ms (0: never), task, queue, args, kwargs,
-- retries, timeout, priority (0-9: the stream it goes to; recorded when not 0), trace (JSON of
-- the trace context, tracing.py; recorded when not ""), then (the JSON list of successors a
-- workflow step tells when it finishes, canvas.py; ""), flow (the workflow's "<queue> <id>";
-- ""), hold (seconds; "": not held), sig (the job's signature, signing.py; recorded when not
-- ""), dedup ("" or "<mode> <window ms> <lock>", dedup.lua) and for (the worker a broadcast
-- copy is for, broadcast.lua; "": any). A held job is a workflow step waiting for its
-- predecessors: recorded `scheduled` with wait "workflow", in no stream or set, its delay and
-- expiry kept for when flow.lua starts it, and the record expires after `hold` seconds unless
-- started. Then the concurrency key ("": none) and its limits (keyed.lua; "": those the
-- workers' code declares for the task, key_declared), written together as the record's
-- `keyed`: a keyed job due now goes onto its stream only while its key has a place, else it
-- waits for one (keyed.lua). Returns 1 when written, 0 when the id existed (then nothing is
-- written: a retried enqueue cannot duplicate a job), or the id of the job holding its dedup
-- key (nothing written, but a debounced job's arguments and due time). A job due now is
-- stamped with the time of its stream entry id (Redis' clock), so it costs no TIME call; the
-- worker creates the consumer group if the stream is new (NOGROUP), at id 0, so nothing
-- enqueued first is missed.
--#include queue
--#include keyed
if redis.replicate_commands then redis.replicate_commands() end
local clock = nil
local KEYS_MARKED = false
local function time_ms()
  if not clock then clock = now_ms() end   -- one TIME per call, however many jobs
  return clock
end
--#include dedup

local function enqueue_job(key, a)
  if redis.call('EXISTS', key) == 1 then return 0 end
  local jid = ARGV[a + 1]
  local d = nil
  if ARGV[a + 18] ~= '' then
    d = dedup().of(ARGV[a + 18])
    local holder = DEDUP.holder(d)
    if holder then return DEDUP.hit(d, holder, a) end
  end
  local delay, eta = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local status, stamp = 'queued', nil
  local hold = ARGV[a + 16]
  if hold ~= '' then
    status, stamp = 'scheduled', time_ms()
  elseif delay > 0 or eta > 0 then
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
  local kfield = nil                                     -- the record's `keyed`
  if ARGV[a + 20] ~= '' then
    local limits = ARGV[a + 21]
    local K = keyed()
    if limits == '' then limits = K.declared(ARGV[a + 6]) end
    kfield = limits .. ' ' .. ARGV[a + 20]
    if not stamp then                                    -- due now: a place, or it waits
      local c, n = K.limits(limits)
      stamp = time_ms()
      K.enter(jid, level, ARGV[a + 6] .. '\0' .. ARGV[a + 20], K.cap(c, n), stamp, true)
    end
  end
  if not stamp then                                      -- due now (held jobs have a stamp)
    stamp = tonumber(string.match(redis.call('XADD', stream, '*', 'id', jid), '^%d+'))
  end
  local expires_in, expires_at = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  if hold ~= '' then
    redis.call('HSET', key, 'wait', 'workflow', 'hold_delay', delay, 'hold_eta', eta,
               'hold_expires', expires_in)
    redis.call('EXPIRE', key, hold)
    expires_in = 0
  end
  if expires_in > 0 then expires_at = stamp + expires_in end
  local sig = ARGV[a + 17]
  if sig == '' then
    redis.call('HSET', key, 'status', status, 'enqueued_at', stamp, 'attempts', 0,
               'task', ARGV[a + 6], 'queue', ARGV[a + 7], 'args', ARGV[a + 8],
               'kwargs', ARGV[a + 9], 'retries', ARGV[a + 10], 'timeout', ARGV[a + 11])
  else                                                   -- signed: in the same HSET
    redis.call('HSET', key, 'status', status, 'enqueued_at', stamp, 'attempts', 0,
               'task', ARGV[a + 6], 'queue', ARGV[a + 7], 'args', ARGV[a + 8],
               'kwargs', ARGV[a + 9], 'retries', ARGV[a + 10], 'timeout', ARGV[a + 11],
               'sig', sig)
  end
  if expires_at > 0 then redis.call('HSET', key, 'expires_at', expires_at) end
  if level > 0 then redis.call('HSET', key, 'priority', ARGV[a + 12]) end
  if ARGV[a + 13] ~= '' then redis.call('HSET', key, 'trace', ARGV[a + 13]) end
  if ARGV[a + 14] ~= '' then redis.call('HSET', key, 'then', ARGV[a + 14]) end
  if ARGV[a + 15] ~= '' then redis.call('HSET', key, 'flow', ARGV[a + 15]) end
  if status == 'scheduled' and hold == '' then redis.call('HSET', key, 'wait', 'delay') end
  if ARGV[a + 19] ~= '' then redis.call('HSET', key, 'for', ARGV[a + 19]) end
  if kfield then
    redis.call('HSET', key, 'keyed', kfield)
    if not KEYS_MARKED then                              -- once per call: keyed.lua, with_keyed
      redis.call('HSETNX', KEYLIMITS, '', '1')
      KEYS_MARKED = true
    end
  end
  if d then DEDUP.claim(d, jid) end
  return 1
end
