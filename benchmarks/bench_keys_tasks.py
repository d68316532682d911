"""The aioq app under test by benchmarks/bench_keys.py (flow control by key).

    cd benchmarks && python -m aioq worker bench_keys_tasks:app --burst

``job`` is the no-op whose drain is measured, enqueued with or without a concurrency key
(``job.options(concurrency_key=...)``: at most 2 of one key at once); ``noop`` the unlimited
no-op of the mix; ``held`` a key-limited job (one at a time per key) that sleeps for an hour
once started, so every other job of its key waits; ``metered`` one limited by rate per key
(one per hour: the first starts and ends at once, the next waits out the hour in the
scheduled set holding the key's place, the rest wait for it). The measured ones record times
in process (bench_record.py); the others record nothing.
"""

from __future__ import annotations

import asyncio

import bench_record as rec

from aioq import App

app = App("benchkeys", redis_url=rec.REDIS_URL)


@app.task(key_concurrency=2)
async def job() -> None:
    rec.started()
    rec.done()


@app.task
async def noop() -> None:
    rec.started()
    rec.done()


@app.task(concurrency_key=lambda key: key, key_concurrency=1)
async def held(key: str) -> None:
    await asyncio.sleep(3600)


@app.task(concurrency_key=lambda key: key, key_rate_limit="1/h")
async def metered(key: str) -> None:
    pass
