-- Renew the leases of entries this consumer still owns (XCLAIM ... JUSTID resets their idle
-- time without counting a delivery). ARGV: group, consumer, entry ids. Returns the ids that are
-- no longer ours: their lease lapsed and another worker took them, or they were finished.
local mine, lost = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}, {}
for i = 3, #ARGV do
  -- pcall: a stream (and group) lost in a Redis restart means every entry is lost, not an
  -- error (an error would end the worker's renewals for good)
  local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then mine[#mine + 1] = ARGV[i] else lost[#lost + 1] = ARGV[i] end
end
if #mine > 5 then
  mine[#mine + 1] = 'JUSTID'
  redis.call(unpack(mine))
end
return lost
