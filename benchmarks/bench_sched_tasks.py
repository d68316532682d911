"""The aioq app under test by benchmarks/bench_scheduling.py.

    cd benchmarks && python -m aioq worker bench_sched_tasks:app --concurrency 100

``noop`` is the unlimited job whose throughput is measured (times recorded in process and
shipped by bench_record's flusher, so no task pays a round trip); ``other`` is an unlimited
job that is not measured (the control: as many extra jobs as the limited ones, without a
limit); ``limited`` is capped at $BENCH_RATE (default "100/s") and counts itself in Redis
(at that rate the round trip costs nothing that matters).
"""

from __future__ import annotations

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
