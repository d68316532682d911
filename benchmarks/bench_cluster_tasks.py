"""The app under test by benchmarks/bench_cluster.py: one no-op task per queue.

    cd benchmarks && BENCH_APP=b BENCH_QUEUES=q0,q1 python -m aioq worker bench_cluster_tasks:app

``BENCH_QUEUES`` names the queues (comma-separated; the harness picks names that spread over a
cluster's masters), ``BENCH_APP`` the app. With ``BENCH_OUT=<dir>`` each worker process writes
``<dir>/<pid>``: the time.time() of its first job's start and of its last job's end, and how
many it ran, when it exits (no Redis call per job: the bookkeeping costs nothing measured).
"""

from __future__ import annotations

import atexit
import os
import time
from pathlib import Path

from aioq import App

app = App(os.environ.get("BENCH_APP", "bench-cluster"))
QUEUES = os.environ.get("BENCH_QUEUES", "default").split(",")

_first: float | None = None
_last = 0.0
_count = 0


def _noop() -> None:
    global _first, _last, _count
    now = time.time()
    if _first is None:
        _first = now
    _last = now
    _count += 1


for _queue in QUEUES:

    @app.task(name=f"noop_{_queue}", queue=_queue)
    async def _task() -> None:
        _noop()


def _write() -> None:
    out = os.environ.get("BENCH_OUT")
    if out and _first is not None:
        Path(out, str(os.getpid())).write_text(f"{_first} {_last} {_count}\n")


atexit.register(_write)
