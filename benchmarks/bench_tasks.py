"""The aioq app under test by benchmarks/bench_core.py (and benchmarks/profile_core.py).

    cd benchmarks && python -m aioq worker bench_tasks:app --concurrency 100

Hooks read at import:
    BENCH_CPROFILE=<path>  profile the worker with cProfile from the first job's start
                           (start-up excluded) to the process's exit, dumped to <path>
    BENCH_TRACE=1          latency tasks also record when the worker's ``start`` script call
                           (after a blocking XREADGROUP delivered the entry) was sent and
                           when its reply came back, to split the enqueue->start latency
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import bench_record as rec

from aioq import App, current_job

if os.environ.get("BENCH_CPROFILE"):
    import atexit
    import cProfile

    _prof = cProfile.Profile()
    rec.on_first_start.append(_prof.enable)

    def _dump() -> None:
        _prof.disable()
        _prof.dump_stats(os.environ["BENCH_CPROFILE"])

    atexit.register(_dump)

_trace: dict[str, tuple[float, float]] = {}
if os.environ.get("BENCH_TRACE"):
    from aioq import scripts as _scripts

    _orig_start = _scripts.Scripts.wait_and_start

    async def _traced_start(self: Any, *args: Any) -> Any:
        # the parked read and the start are one round trip now: both times are its return
        rows, more = await _orig_start(self, *args)
        t1 = time.time()
        for row in rows:
            _trace[row[1].decode()] = (t1, t1)
        return rows, more

    _scripts.Scripts.wait_and_start = _traced_start  # type: ignore[method-assign]

app = App("bench", redis_url=rec.REDIS_URL)


@app.task
async def noop() -> None:
    rec.started()
    rec.done()


@app.task
async def sleep() -> None:
    rec.started()
    await asyncio.sleep(0.01)
    rec.done()


@app.task
async def spin(us: int) -> None:
    """Hold the CPU for ``us`` microseconds (a job whose cost is Python, bench_processes.py)."""
    rec.started()
    end = time.perf_counter() + us / 1e6
    while time.perf_counter() < end:
        pass
    rec.done()


@app.task
async def rpc() -> None:
    """The round trip's no-op (bench_worker.py): nothing recorded, the caller times it."""


@app.task
async def lat(i: int) -> None:
    if _trace:
        t0, t1 = _trace.pop(current_job().id, (0.0, 0.0))
        rec.lat(i, f" {t0!r} {t1!r}")
    else:
        rec.lat(i)


@app.task
async def relay(x: int = 0) -> int:
    """A chain's step (bench_workflows.py): records its start, returns the previous step's
    result plus one."""
    rec.lat(x)
    return x + 1


@app.task
async def collect(values: list[Any]) -> int:
    """A chord's callback (bench_workflows.py): how many member results it got."""
    return len(values)
