"""Operations: the Lua behind the ``aioq`` CLI (dead-letter requeue and retry, sharing
``requeue.lua``; purge, and PURGE_KEYED for the jobs waiting on their keys), the workers'
heartbeat and task progress. None is on a job's hot path.
Wrapped by the ``Scripts`` methods under "operations" (``__init__.py``), except PROGRESS,
which ``current_job().set_progress`` runs by PROGRESS_SHA (``context.py``).
"""

from __future__ import annotations

import hashlib

from .lua import source

REQUEUE_DEAD = source("requeue_dead")
RETRY = source("retry")
PURGE = source("purge")
PURGE_KEYED = source("purge_keyed")
HEARTBEAT = source("heartbeat")
PROGRESS = source("progress")
PROGRESS_SHA = hashlib.sha1(PROGRESS.encode()).hexdigest()
