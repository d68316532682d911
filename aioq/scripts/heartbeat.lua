-- A worker's heartbeat. KEYS: the app's workers hash. ARGV: consumer, stats (a JSON object),
-- hash ttl (s). Stamps the stats with Redis' time ("beat", epoch ms), so readers judge
-- staleness on one clock whatever the workers' clocks say. Returns that time.
--#include helpers
if redis.replicate_commands then redis.replicate_commands() end
local now = now_ms()
redis.call('HSET', KEYS[1], ARGV[1], '{"beat":' .. now .. ',' .. string.sub(ARGV[2], 2))
redis.call('EXPIRE', KEYS[1], ARGV[3])
return now
