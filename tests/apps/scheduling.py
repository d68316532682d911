"""Tasks for the multi-worker scheduling tests (``tests/test_scheduling_workers.py``), run by
worker subprocesses.

Configured by the environment, so every test runs its workers on its own unique app::

    AIOQ_TEST_APP          app name (the test's ``app`` fixture name)
    AIOQ_TEST_VT           visibility_timeout in seconds (default 5)
    AIOQ_TEST_RATE         the rate limit ``limited`` declares (default "5/s")
    AIOQ_TEST_CRON_EVERY   when set, ``tick`` runs on ``@app.cron(every=<seconds>)``

Tasks record what they did on side keys (``side_key``), outside aioq's key layout.
"""

from __future__ import annotations

import asyncio
import os

from aioq import App, current_job

app = App(
    os.environ.get("AIOQ_TEST_APP", "scheduling"),
    visibility_timeout=float(os.environ.get("AIOQ_TEST_VT", "5")),
)


def side_key(app_name: str, what: str) -> str:
    """A key outside aioq's layout where tasks of app ``app_name`` record executions."""
    return f"aioq-test:{app_name}:{what}"


@app.task
async def tick() -> None:
    """Record this run of a cron tick: "<job id> <pid>" appended to the ``ticks`` list."""
    await app.redis.rpush(side_key(app.name, "ticks"), f"{current_job().id} {os.getpid()}")


if os.environ.get("AIOQ_TEST_CRON_EVERY"):
    app.cron(every=float(os.environ["AIOQ_TEST_CRON_EVERY"]))(tick)


@app.task(rate_limit=os.environ.get("AIOQ_TEST_RATE", "5/s"))
async def limited(i: int, ms: int = 0) -> int:
    """A rate-limited job holding its slot for ``ms`` milliseconds (its start time is the job
    record's ``started_at``)."""
    if ms:
        await asyncio.sleep(ms / 1000)
    return i


@app.task
async def quick(i: int, ms: int = 10) -> int:
    """An unlimited job that holds its slot for ``ms`` milliseconds."""
    await asyncio.sleep(ms / 1000)
    return i


@app.task
async def hang() -> None:
    """Say it started, then sleep; a cancellation is recorded (``cancelled``) and re-raised."""
    await app.redis.set(side_key(app.name, "hang:started"), os.getpid())
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        await app.redis.set(side_key(app.name, "hang:cancelled"), os.getpid())
        raise
