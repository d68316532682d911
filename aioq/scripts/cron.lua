-- Fire one cron tick. KEYS: the queue's (queue.lua), the job, the cron state. ARGV: tick epoch ms, mode, then
-- the job's ENQUEUE_ARGS values. The state holds the last tick handled, so a tick fires at most
-- once and never after a later one, however many workers race; the job id names the tick, so
-- even a state lost with Redis cannot fire it twice while the job record lives. Mode "fire"
-- enqueues; "mark" only advances the state (first start, or a tick skipped by the catch-up
-- policy). Returns 1 when the tick's job was written, 0 otherwise. An optional last key holds
-- the last tick that wrote its job, so a view can tell "never ran" from "ran at ...".
--#include enqueue_job
local tick = tonumber(ARGV[1])
local JOB, STATE, RAN = KEYS[OWN_KEYS], KEYS[OWN_KEYS + 1], KEYS[OWN_KEYS + 2]
local last = tonumber(redis.call('GET', STATE) or '-1')
if tick <= last then return 0 end
redis.call('SET', STATE, ARGV[1])
if ARGV[2] ~= 'fire' then return 0 end
local written = enqueue_job(JOB, 2)
if written == 1 and RAN then redis.call('SET', RAN, ARGV[1]) end
return written
