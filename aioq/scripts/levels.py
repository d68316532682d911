"""The Lua helper shared by every script that picks a job's stream by its priority: the
enqueue scripts (``enqueue.py``), the worker's (``worker.py``) and the operations (``ops.py``).
"""

# The stream of priority p (string or number) of the queue whose priority-0 stream is `base`:
# "<base>:<p>" for 1-9 (keys.py), and anything else is priority 0. Shared by every script that
# picks a job's stream.
_LEVEL_STREAM = r"""
local function level_stream(base, p)
  p = tostring(p or '')
  if string.match(p, '^[1-9]$') then return base .. ':' .. p end
  return base
end
"""
