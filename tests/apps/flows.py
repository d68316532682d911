"""Tasks for the workflow fault tests (``tests/test_workflow_faults.py``), run by worker
subprocesses: members on queue "members", callbacks on queue "callbacks" (other cluster
slots), each counting its runs on side keys outside aioq's layout.

    AIOQ_TEST_APP   app name (the test's ``app`` fixture name)
    AIOQ_TEST_VT    visibility_timeout in seconds
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from aioq import App, current_job

app = App(
    os.environ.get("AIOQ_TEST_APP", "flows"),
    visibility_timeout=float(os.environ.get("AIOQ_TEST_VT", "5")),
)


def side_key(app_name: str, what: str) -> str:
    return f"aioq-test:{app_name}:{what}"


@app.task(queue="members")
async def member(i: int, kill: bool = False, until: float = 0.0) -> int:
    """Count a run of this job; SIGKILL the worker on the first run when ``kill``; sleep until
    epoch ``until`` (members of one chord finish at the same instant on different workers)."""
    runs = await app.redis.hincrby(side_key(app.name, "runs"), current_job().id, 1)
    if kill and runs == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    if until:
        await asyncio.sleep(max(0.0, until - time.time()))
    return i


@app.task(queue="callbacks")
async def collect(values: list[int], tag: str) -> int:
    """Count the callback's runs by tag, once per job id and overall."""
    await app.redis.hincrby(side_key(app.name, "callbacks"), tag, 1)
    return sum(values)
