"""The Lua of workflow hand-overs (``handover.py``): FLOW tells the steps of one queue how
their predecessors ended (``flow.lua``), SWEEP returns the hand-overs a dead worker left in a
queue's outbox (``sweep.lua``); both on ``handover.lua`` and ``tell.lua`` (how a step or join
is told). ``complete.lua`` tells the successors on the job's own queue itself, puts a job with
successors elsewhere in the outbox and returns its hand-over."""

from __future__ import annotations

from .lua import source

FLOW_ARGS = 8
"""Values per record of FLOW: kind, id, on, pass, index, then the predecessor's status, id and
payload."""
FLOW_CHUNK = 500
"""Records at most in one FLOW call."""

FLOW = source("flow")
SWEEP = source("sweep")
