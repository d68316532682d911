-- A worker's heartbeat. KEYS: the app's workers hash, its throughput hash. ARGV: consumer,
-- stats (a JSON object; empty: the worker is stopping, its entry is removed), workers hash
-- ttl (s), the worker's finished jobs ("done", its running total), and that total as of its
-- last acknowledged heartbeat. Stamps the stats with Redis' time ("beat", epoch ms), so
-- readers judge staleness on one clock whatever the workers' clocks say, and adds the jobs
-- finished since the previous beat to the current throughput bucket. Returns that time.
--
-- "Since the previous beat" is read from the worker's entry here, not taken from the worker:
-- a beat whose reply was lost (or that redis-py resent after a timeout) has written its total,
-- so the next beat counts nothing twice. The worker's acknowledged total is the fallback for an
-- entry that is not there (the first beat; `aioq info` pruned a worker that was silent). So
-- the chart is exact up to a bucket: jobs count in the bucket of the beat that reports them
-- (up to a heartbeat after they finished), and a worker killed before its next beat never
-- reports its last ones.
--#include helpers
if redis.replicate_commands then redis.replicate_commands() end
local now = now_ms()
local before = tonumber(ARGV[5])
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if entry then
  local ok, stats = pcall(cjson.decode, entry)
  if ok and type(stats) == 'table' and tonumber(stats.done) then before = tonumber(stats.done) end
end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], '{"beat":' .. now .. ',' .. string.sub(ARGV[2], 2))
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
local secs = math.floor(now / 1000)
local bucket = secs - secs % {{THROUGHPUT_BUCKET}}
-- 0 too: a bucket every worker was idle in reads as a zero, not as a gap
redis.call('HINCRBY', KEYS[2], string.format('%d', bucket), tonumber(ARGV[4]) - before)
redis.call('EXPIRE', KEYS[2], {{THROUGHPUT_WINDOW}} + {{THROUGHPUT_BUCKET}})
-- the buckets that started within the window (60, the current one last): only a new bucket
-- goes past that, so the scan runs once a bucket
if redis.call('HLEN', KEYS[2]) > {{THROUGHPUT_WINDOW}} / {{THROUGHPUT_BUCKET}} then
  for _, start in ipairs(redis.call('HKEYS', KEYS[2])) do
    if (tonumber(start) or 0) <= bucket - {{THROUGHPUT_WINDOW}} then
      redis.call('HDEL', KEYS[2], start)
    end
  end
end
return now
