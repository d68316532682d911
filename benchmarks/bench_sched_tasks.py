"""The aioq app under test by benchmarks/bench_scheduling.py.

    cd benchmarks && python -m aioq worker bench_sched_tasks:app --concurrency 100

``noop`` is the unlimited job whose throughput is measured (times recorded in process and
shipped by bench_record's flusher, so no task pays a round trip); ``other`` is an unlimited
job that is not measured (the control: as many extra jobs as the limited ones, without a
limit); ``limited`` is capped at $BENCH_RATE (default "100/s") and counts itself in Redis
(at that rate the round trip costs nothing that matters). ``prio(p)`` is the no-op of part iv,
enqueued at priority ``p``: it records its start in process, in order, as "p time batch"
(bench_record's ``lat`` list), where batch numbers the worker's fetched batches (see ``_batch``).
"""

from __future__ import annotations

import asyncio
import os

import bench_record as rec

from aioq import App

app = App("benchsched", redis_url=rec.REDIS_URL)

K_LIMITED_DONE = "bench:limited_done"


@app.task
async def noop() -> None:
    rec.started()
    rec.done()


@app.task
async def other() -> None:
    pass


@app.task(rate_limit=os.environ.get("BENCH_RATE", "100/s"))
async def limited() -> None:
    await app.redis.incr(K_LIMITED_DONE)


# The worker creates one asyncio task per job of a fetched batch, all in one go, so their first
# steps (where a no-op task runs to its end) all run in the next turn of the event loop, and the
# next batch's only after another round trip. A task that finds no batch open opens one and
# closes it on the following turn: tasks of one batch share a number, in the order the fetch
# script started them.
_batch = 0
_open = False


def _close() -> None:
    global _open
    _open = False


@app.task
async def prio(p: int) -> None:
    global _batch, _open
    if not _open:
        _batch += 1
        _open = True
        asyncio.get_running_loop().call_soon(_close)
    rec.lat(p, f" {_batch}")
