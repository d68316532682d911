"""The Lua of the worker's path, one ``.lua`` file each: ``start.lua`` (shared: ``start``,
which turns delivered stream entries into started jobs, and its helpers), ``fetch.lua`` and
``start_new.lua`` (read and start new jobs, highest priority first, with FAIR turns for the
lower ones), ``reclaim.lua`` (take over lapsed leases), ``recover.lua`` (what a lost reply
held), ``complete.lua`` (write outcomes, fenced), ``renew.lua`` (leases), ``release_all.lua``
(shutdown), ``promote.lua`` (due scheduled jobs), ``cancel.lua`` (what ``job.cancel()``
runs; a running job is flagged for its worker) and ``take.lua`` (the broadcast copies other
workers handed to this one, ``broadcast.lua``). ``finish.lua`` ends a job the same way for all.

The worker's hot path is two calls per *batch*, never per job: ``fetch`` (read up to the free
slots and mark them running) and ``complete`` (write results, XACK, XDEL, publish).
"""

from __future__ import annotations

from .lua import source

FAIR = 10
"""Every FAIR-th job a worker starts from a queue is a fair turn for a lower priority."""

_PRELUDE = source("start")
FETCH = source("fetch", FAIR=FAIR)
START_NEW = source("start_new")
RECLAIM = source("reclaim")
RECOVER = source("recover")
COMPLETE = source("complete")
RENEW = source("renew")
RELEASE_ALL = source("release_all")
PROMOTE = source("promote")
CANCEL = source("cancel")
TAKE = source("take")
