"""Tasks for the supervisor tests (``tests/test_processes.py``), run by the worker processes of
``aioq worker --processes N``.

Configured by the environment, so every test runs its processes on its own unique app::

    AIOQ_TEST_APP          app name (the test's ``app`` fixture name)
    AIOQ_TEST_VT           visibility_timeout in seconds (default 5)
    AIOQ_TEST_BREAK_FLAG   a path: while that file exists, importing this module fails in a
                           process of a supervisor (the supervisor's own check still passes),
                           as a deploy that broke the code does

Tasks record what they did on side keys (``side_key``), outside aioq's key layout.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from aioq import App, current_job
from aioq.supervisor import supervised

_flag = os.environ.get("AIOQ_TEST_BREAK_FLAG")
if _flag and Path(_flag).exists() and supervised() is not None:
    raise RuntimeError("simulated import failure (the break flag exists)")

app = App(
    os.environ.get("AIOQ_TEST_APP", "procs"),
    visibility_timeout=float(os.environ.get("AIOQ_TEST_VT", "5")),
)

_held: list[bytes] = []  # what ``hog`` allocated: kept for the life of the process


def side_key(app_name: str, what: str) -> str:
    """A key outside aioq's layout where tasks of app ``app_name`` record executions."""
    return f"aioq-test:{app_name}:{what}"


@app.task
async def work(ms: int = 0) -> int:
    """Count a start, sleep ``ms`` milliseconds, count an end (hashes: job id -> count), and
    count the job against this process as it starts and ends (hashes: pid -> jobs)."""
    job_id = current_job().id
    async with app.redis.pipeline(transaction=False) as pipe:
        pipe.hincrby(side_key(app.name, "starts"), job_id, 1)
        pipe.hincrby(side_key(app.name, "began"), str(os.getpid()), 1)
        await pipe.execute()
    if ms:
        await asyncio.sleep(ms / 1000)
    async with app.redis.pipeline(transaction=False) as pipe:
        pipe.hincrby(side_key(app.name, "ends"), job_id, 1)
        pipe.hincrby(side_key(app.name, "pids"), str(os.getpid()), 1)
        await pipe.execute()
    return os.getpid()


@app.task
async def hog(mb: int) -> int:
    """Allocate ``mb`` MB, touch every page (resident) and keep it; return the pid."""
    _held.append(b"\x01" * (mb * 2**20))
    await app.redis.hincrby(side_key(app.name, "hogs"), str(os.getpid()), 1)
    return os.getpid()
