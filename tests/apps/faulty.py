"""Tasks for the fault-injection tests (``tests/test_faults.py``), run by worker subprocesses.

The app's name, visibility timeout and ``max_deliveries`` come from the environment, so every
test runs its workers on its own unique app (isolation without FLUSHALL)::

    AIOQ_TEST_APP              app name (the test's ``app`` fixture name)
    AIOQ_TEST_VT               visibility_timeout in seconds
    AIOQ_TEST_MAX_DELIVERIES   max_deliveries

Tasks record what they did on side keys (``side_key``) or in files, so the test can count
executions independently of aioq's own bookkeeping.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from aioq import App, current_job

app = App(
    os.environ.get("AIOQ_TEST_APP", "faulty"),
    visibility_timeout=float(os.environ.get("AIOQ_TEST_VT", "5")),
    max_deliveries=int(os.environ.get("AIOQ_TEST_MAX_DELIVERIES", "5")),
)


def side_key(app_name: str, what: str) -> str:
    """A key outside aioq's layout where tasks of app ``app_name`` record executions."""
    return f"aioq-test:{app_name}:{what}"


@app.task
async def work(i: int, ms: int) -> int:
    """Count a start, sleep ``ms`` milliseconds, count an end (hashes: job id -> count)."""
    job_id = current_job().id
    await app.redis.hincrby(side_key(app.name, "starts"), job_id, 1)
    await asyncio.sleep(ms / 1000)
    await app.redis.hincrby(side_key(app.name, "ends"), job_id, 1)
    return i


@app.task
async def whoami(seconds: float, path: str) -> int:
    """Append this process's pid to ``<path>.started``, sleep, then append it to ``path``
    (synchronously) and return it.

    Nothing is awaited after the sleep, so a copy whose sleep is over always finishes.
    """
    with Path(path + ".started").open("a") as f:  # noqa: ASYNC230 - sync on purpose
        f.write(f"{os.getpid()}\n")
    await asyncio.sleep(seconds)
    with Path(path).open("a") as f:  # noqa: ASYNC230 - sync on purpose: no await after the sleep
        f.write(f"{os.getpid()}\n")
    return os.getpid()


@app.task
async def suicide() -> None:
    """Record the delivery, then SIGKILL the worker running it: the job can never finish."""
    await app.redis.rpush(side_key(app.name, "runs"), os.getpid())
    os.kill(os.getpid(), signal.SIGKILL)
    await asyncio.sleep(60)  # never reached: the signal is delivered synchronously


@app.task
async def nap(seconds: float, first_attempt_only: bool = False) -> int:
    """Record the start (list of pids per job), sleep, return this process's pid.

    With ``first_attempt_only`` later attempts return at once (a job handed back on shutdown).
    """
    ctx = current_job()
    await app.redis.rpush(side_key(app.name, f"runs:{ctx.id}"), os.getpid())
    if ctx.attempt == 1 or not first_attempt_only:
        await asyncio.sleep(seconds)
    return os.getpid()


@app.task
async def block(seconds: float, first_attempt_only: bool = False) -> int:
    """Block the worker's event loop with a sync sleep (the bug this simulates: sync I/O or a
    CPU-heavy step inside ``async def``), record the run (list of pids per job), return the pid.

    With ``first_attempt_only`` later attempts return at once.
    """
    ctx = current_job()
    await app.redis.rpush(side_key(app.name, f"runs:{ctx.id}"), os.getpid())
    if ctx.attempt == 1 or not first_attempt_only:
        time.sleep(seconds)  # noqa: ASYNC251 - blocking the loop is the point
    return os.getpid()
