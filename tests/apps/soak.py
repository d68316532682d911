"""Tasks for the soak and network-fault runs (``benchmarks/soak.py``, ``tests/test_soak.py``,
``tests/test_network_faults.py``), run by worker subprocesses.

The app comes from the environment, so every run has its own keys::

    AIOQ_SOAK_APP              app name
    AIOQ_SOAK_VT               visibility_timeout in seconds
    AIOQ_SOAK_MAX_DELIVERIES   max_deliveries

Every task records each run in Redis before it does anything else: one field per run in the
hash ``runs_key(app)``, named ``<job id>|<run token>``. HSET of a fresh field is safe to resend
(redis-py retries a command whose reply a killed connection lost), so a run is counted once
however the connection fails, and a worker SIGKILLed after the write leaves its run counted.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

from redis.asyncio import Redis

from aioq import App, current_job

app = App(
    os.environ.get("AIOQ_SOAK_APP", "soak"),
    visibility_timeout=float(os.environ.get("AIOQ_SOAK_VT", "3")),
    max_deliveries=int(os.environ.get("AIOQ_SOAK_MAX_DELIVERIES", "100")),
)


def runs_key(app_name: str) -> str:
    """The hash where tasks of app ``app_name`` record their runs (outside aioq's keys)."""
    return f"aioq-soak:{{{app_name}}}:runs"


async def _record_run() -> None:
    job = current_job()
    run = f"{job.id}|{os.urandom(6).hex()}"
    # the value says who ran it, which attempt, and when (for a failing soak's explanation)
    await app.redis.hset(runs_key(app.name), run, f"{os.getpid()} {job.attempt} {time.time():.3f}")


@app.task
async def noop(i: int) -> int:
    await _record_run()
    return i


@app.task
async def nap(i: int, ms: int) -> int:
    """Sleep ``ms`` milliseconds (longer than the visibility timeout: the lease is renewed)."""
    await _record_run()
    await asyncio.sleep(ms / 1000)
    return i


@app.task
async def burn(i: int, ms: int) -> int:
    """Spend ``ms`` milliseconds of CPU in a worker thread (a sync task), then return."""
    await _record_run()
    await asyncio.to_thread(_spin, ms / 1000)
    return i


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    x = 0
    while time.thread_time() < end:
        x += 1


async def runs_per_job(redis: Redis, app_name: str) -> Counter[str]:
    """How many times each job ran, from the run records."""
    counts: Counter[str] = Counter()
    async for field, _ in redis.hscan_iter(runs_key(app_name), count=5000):
        counts[field.decode().partition("|")[0]] += 1
    return counts
