"""Completion bookkeeping shared by the benchmark workers (aioq and the raw ceiling).

Tasks call ``started()`` and ``done()`` (or ``lat(i)``): these only record time.time() in
process. A flusher on the worker's own event loop ships the count, the first start and the
last finish to Redis every 10 ms over its own connection (one pipeline per flush), so no task
pays a round trip for the bookkeeping and the flush cadence does not change what is measured
(the times are taken when the task runs).

Imports nothing of aioq, so the raw ceiling's start-up is not charged with aioq's imports.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import redis.asyncio as aredis

REDIS_URL = os.environ.get("AIOQ_REDIS_URL", "redis://127.0.0.1:6379/0")
FLUSH_INTERVAL = 0.01

# Keys of the harness itself (FLUSHALL'd between runs).
K_DONE = "bench:done"  # INCRBY'd: tasks finished
K_FIRST_START = "bench:first_start"  # time.time() when the first task started
K_LAST = "bench:last"  # time.time() when the latest task finished
K_LAT = "bench:lat"  # list of "i start_time" of latency tasks
K_IMPORTED = "bench:imported"  # time.time() when the worker had imported the tasks' module

IMPORTED_AT = time.time()  # this module is imported with the tasks (after the CLI's imports)

_first_start: float | None = None
_n = 0
_last = 0.0
_lat: list[str] = []
_flusher: asyncio.Task[None] | None = None
on_first_start: list[Callable[[], None]] = []  # e.g. start a profiler once start-up is over


def started() -> None:
    """First thing in a task: records the first start and starts the flusher."""
    global _first_start, _flusher
    if _first_start is None:
        _first_start = time.time()
        _flusher = asyncio.get_running_loop().create_task(_flush_loop())
        for hook in on_first_start:
            hook()


def done() -> None:
    """Last thing in a task."""
    global _n, _last
    _n += 1
    _last = time.time()


def lat(i: int, extra: str = "") -> None:
    """A latency task: its start time (and ``extra`` text), then done."""
    started()
    _lat.append(f"{i} {time.time()!r}{extra}")
    done()


def flusher_running() -> bool:
    return _flusher is not None


async def _flush_loop() -> None:
    r = aredis.from_url(REDIS_URL)
    sent = 0
    first_sent = False
    me = asyncio.current_task()
    try:
        # not `while True`: on Python 3.11 redis-py's asyncio.wait_for can swallow the
        # cancellation asyncio.run sends at exit, and the loop would keep the process alive
        while me is None or not me.cancelling():
            await asyncio.sleep(FLUSH_INTERVAL)
            n = _n
            if n == sent and not _lat:
                continue
            async with r.pipeline(transaction=False) as p:
                if not first_sent:
                    p.set(K_FIRST_START, repr(_first_start), nx=True)
                    p.set(K_IMPORTED, repr(IMPORTED_AT), nx=True)
                    first_sent = True
                if _lat:
                    items = _lat[:]
                    del _lat[: len(items)]
                    p.rpush(K_LAT, *items)
                p.set(K_LAST, repr(_last))
                p.incrby(K_DONE, n - sent)  # last: LAST is set when DONE is seen
                await p.execute()
            sent = n
    finally:
        await r.aclose()
