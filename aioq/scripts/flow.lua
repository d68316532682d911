-- Tell workflow steps of one queue how their predecessors ended (handover.py). KEYS: the
-- queue's (queue.lua). ARGV: 1 result ttl (s), then records of 8: kind ("start", "join" or
-- "unlock"),
-- id, on ("ok"/"fail"), pass ("value"/"id"/"none"), member index, and the predecessor's
-- status, id and payload (handover.lua). Every record may be applied any number of times
-- with the same effect, which is what makes a hand-over exactly once however often a crashed
-- worker's outbox is swept:
--   start  only a held step changes: it starts (with the value, or the failed job's id, as its
--          `input`, the first argument the worker gives it) when `on` matches the outcome,
--          and is cancelled otherwise (with the failure as its `cause` when one is upstream);
--   join   the member's outcome is kept under its index once (HSETNX), counted once; the
--          join fires once: at the last member, or the first failure unless in "collect" mode;
--   unlock a `unique_for` job finished (dedup.lua): its key (id) expires the window (member
--          index, ms) after its finish, if the job still holds it.
-- Whatever this finishes that has successors of its own goes into this queue's outbox in the
-- same call, and is returned as hand-overs for the caller to pass on. A step or join told again
-- after it was finished so returns its hand-over again while it is still in the outbox: a
-- caller interrupted between telling and passing on (a worker stopping) loses nothing by
-- telling again.
if redis.replicate_commands then redis.replicate_commands() end
local TTL = tonumber(ARGV[1])
--#include finish
--#include tell
local now = now_ms()
local told, out = {}, {}
for i = 2, #ARGV, 8 do
  tell(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6],
       ARGV[i + 7], now, told)
end
for _, h in ipairs(told) do pass_on(h, now, out) end
return noted(out)
