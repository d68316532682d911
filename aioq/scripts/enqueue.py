"""The Lua that writes jobs: ENQUEUE (one job or many, idempotent by job id, ``enqueue.lua``)
and CRON (one cron tick, at most once, ``cron.lua``), both built on ``enqueue_job.lua``.
ENQUEUE_ARGS values describe one job (``Call.prepare`` in ``task.py`` builds them);
ENQUEUE_CHUNK jobs at most go in one call.
"""

from __future__ import annotations

from .lua import source

ENQUEUE_ARGS = 21
ENQUEUE_CHUNK = 200
DURABLE_TIMEOUT = 5.0
"""Seconds a ``durable=True`` enqueue waits for a replica to acknowledge its jobs (``WAIT 1``
behind the enqueue, in the same write) before it raises ``NotDurable``."""
ENQUEUE = source("enqueue", ENQUEUE_ARGS=ENQUEUE_ARGS)
CRON = source("cron")
