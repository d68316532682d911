-- Record a running job's progress and publish it. KEYS: job, progress channel. ARGV: JSON.
-- Each value gets the next `progress_seq`, published as "<seq> <JSON>": a reader that reads
-- the stored value after subscribing skips what it has already seen. Returns the sequence
-- number (0: no such job, nothing written).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local seq = redis.call('HINCRBY', KEYS[1], 'progress_seq', 1)
redis.call('HSET', KEYS[1], 'progress', ARGV[1])
redis.call('PUBLISH', KEYS[2], seq .. ' ' .. ARGV[1])
return seq
