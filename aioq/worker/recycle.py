"""Recycling: a worker that stops itself once it has done enough, for a supervisor to replace
(``aioq worker --max-jobs-per-process M --max-memory-per-process MB``, Celery's
``--max-tasks-per-child`` and ``--max-memory-per-child``).

A limit reached calls ``worker.recycle(reason)``, which is ``worker.stop()`` with the reason
kept in ``worker.recycled``: the normal graceful stop (no new jobs, running ones get the grace
period, outcomes written, the rest handed back at once), so a recycle loses no job and runs
none twice. Jobs are counted as they are taken (``Runner.start``, once per batch), so a
process runs at most the rest of the batch that reached the limit. Memory, the resident set,
is read every ``MEMORY_POLL`` seconds from ``/proc/self/statm`` (where there is no ``/proc``,
the peak from ``getrusage``). A worker that has not finished a job since it started never
recycles for memory: a limit below what a fresh process needs would otherwise replace
processes in a loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .core import Worker

log = logging.getLogger("aioq.worker")

MEMORY_POLL = 1.0  # seconds between two reads of the resident set
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mb() -> float:
    """This process's resident set now, in MB (2**20 bytes)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE / 2**20
    except (OSError, IndexError, ValueError):  # no /proc: the peak, KB on Linux, bytes on macOS
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


async def memory_loop(worker: Worker, limit_mb: float) -> None:
    """Recycle ``worker`` once its resident set passes ``limit_mb`` after a finished job."""
    start = rss_mb()
    if start > limit_mb:
        log.warning(
            "resident set %.0f MB at start is above the memory limit of %g MB: this process "
            "is recycled as soon as it has finished a job", start, limit_mb,
        )  # fmt: skip
    while True:
        await asyncio.sleep(MEMORY_POLL)
        if not worker.jobs_done:
            continue
        now = rss_mb()
        if now > limit_mb:
            worker.recycle(f"resident set {now:.0f} MB is above the limit of {limit_mb:g} MB")
            return
