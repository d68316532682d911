-- Read up to ARGV[6] new entries without blocking and start them. Returns started jobs.
--
-- Priorities: the queue's streams are read from the highest priority down, so a higher one
-- starts first, except that every FAIR-th job a worker starts from the queue is a fair turn,
-- handed to the levels in rotation (1, 2, ..., 9, 0, 1, ...): the level whose turn it is, or
-- the next lower level with jobs waiting (wrapping round to the highest). So every level with
-- jobs waiting gets at least one start in FAIR * PRIORITIES (100) of each worker's starts:
-- lower levels are slowed, never starved. ARGV[7] is the worker's count of jobs started
-- from the queue so far, which places this batch in the rotation.
--#include start
local budget, turn, FAIR = tonumber(ARGV[6]), tonumber(ARGV[7]), {{FAIR}}
local now = now_ms()
local out, fair = {}, {}         -- fair: {place in this batch, its started job} per fair turn

-- Start up to `count` new entries of level p into `dest`; returns how many entries were read.
local function read(p, count, dest)
  use_level(p)
  local cmd = {'XREADGROUP', 'GROUP', GROUP, CONSUMER, 'COUNT', count, 'STREAMS', STREAM, '>'}
  local r = redis.pcall(unpack(cmd))
  if type(r) == 'table' and r.err and string.find(r.err, 'NOGROUP') then
    ensure_group()                              -- Redis lost the group (restart without data)
    r = redis.pcall(unpack(cmd))
  end
  if type(r) == 'table' and r.err then
    fault(r.err)
    return 0
  end
  if not r then return 0 end
  start(r[1][2], now, dest)
  return #r[1][2]
end

-- Levels that may hold jobs, highest first: an empty stream (most of them, for most queues)
-- costs one XLEN. Level 0 is always read (it recreates a lost group).
local live = {}
for p = PRIORITIES - 1, 1, -1 do
  if level_len(p) > 0 then live[#live + 1] = p end
end
live[#live + 1] = 0

if #live > 1 then
  for k = turn + 1, turn + budget do
    if k % FAIR == 0 then
      local want = (k / FAIR) % PRIORITIES
      while #live > 0 do
        local i = 1                                 -- wrap: the highest level
        for j, p in ipairs(live) do
          if p <= want then i = j; break end
        end
        local got = {}
        if read(live[i], 1, got) > 0 then
          fair[#fair + 1] = {k - turn, got}
          budget = budget - 1
          break
        end
        table.remove(live, i)                       -- nothing new at that level
      end
    end
  end
end
for _, p in ipairs(live) do
  if budget <= 0 then break end
  budget = budget - read(p, budget, out)
end
if #out == 0 and #fair == 0 and FAULT then return noted(redis.error_reply(FAULT)) end
if #fair == 0 then return noted(out) end
-- each fair turn at its place, so the worker starts jobs in turn order whatever its batches
local merged, g = {}, 1
for _, f in ipairs(fair) do
  while #merged + 1 < f[1] and g <= #out do
    merged[#merged + 1] = out[g]
    g = g + 1
  end
  for _, row in ipairs(f[2]) do merged[#merged + 1] = row end
end
for i = g, #out do merged[#merged + 1] = out[i] end
return noted(merged)
