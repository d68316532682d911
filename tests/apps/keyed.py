"""Tasks for the flow-control-by-key tests across worker processes (``tests/test_key_faults.py``).

The app's name and visibility timeout come from the environment (``AIOQ_TEST_APP``,
``AIOQ_TEST_VT``), so every test runs its workers on its own app. Each attempt records its
start and end on a side list with Redis' clock (``TIME``), so a test can tell how many
attempts of a key ran at once even when a worker was killed in the middle of some (a killed
attempt has a start and no end).
"""

from __future__ import annotations

import asyncio
import os

from aioq import App, current_job

app = App(
    os.environ.get("AIOQ_TEST_APP", "keyed"),
    visibility_timeout=float(os.environ.get("AIOQ_TEST_VT", "5")),
)


def attempts_key(app_name: str) -> str:
    """The side list of "<start|end> <job id> <attempt> <key> <epoch µs>" of app ``app_name``."""
    return f"aioq-test:{app_name}:attempts"


async def _note(what: str, key: str) -> None:
    ctx = current_job()
    secs, micros = await app.redis.time()
    line = f"{what} {ctx.id} {ctx.attempt} {key} {secs * 1_000_000 + micros}"
    await app.redis.rpush(attempts_key(app.name), line)


@app.task(concurrency_key=lambda key, ms: key, key_concurrency=2)
async def pair(key: str, ms: int) -> None:
    """Two at a time per key: note the start, sleep ``ms``, note the end."""
    await _note("start", key)
    await asyncio.sleep(ms / 1000)
    await _note("end", key)


@app.task(concurrency_key=lambda key, ms: key, key_concurrency=1)
async def single(key: str, ms: int) -> None:
    """One at a time per key, as ``pair``."""
    await _note("start", key)
    await asyncio.sleep(ms / 1000)
    await _note("end", key)


@app.task(concurrency_key=lambda key: key, key_rate_limit="5/s")
async def metered(key: str) -> None:
    """At most 5 starts per key per second, as many at once as start."""
    await _note("start", key)
    await asyncio.sleep(0.05)
    await _note("end", key)
