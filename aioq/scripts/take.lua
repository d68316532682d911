-- Take the broadcast copies other workers handed to this consumer (broadcast.lua): each member
-- of its `handed` set (KEYS[OWN_KEYS]) whose record still says this consumer runs it, as a
-- started-job row (the attempt the hand-over counted). The set is emptied, so each hand-over is
-- taken once; the worker leaves alone a row it runs already (its own reclaim found it first).
-- A copy whose lease lapsed meanwhile was failed by whoever took the entry over: not returned.
--#include start
local out = {}
local handed = KEYS[OWN_KEYS]
for _, m in ipairs(redis.call('SMEMBERS', handed)) do
  local p, eid, jid = string.match(m, '^(%d) (%S+) (.+)$')
  if p then
    use_level(tonumber(p))
    local row = held_row(eid, jid)
    if row then out[#out + 1] = row end
  end
end
redis.call('DEL', handed)
return out
