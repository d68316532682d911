"""Type-only checks of deduplication, bounded queues, routing and broadcast, run by
`mypy --strict` (never executed)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, assert_type

from aioq import AioqError, App, BroadcastJob, BroadcastTask, Job, QueueFull, Task

app = App(
    "typing-flow",
    queue_limits={"emails": 10_000},
    routes={"emails.*": "emails", "reports.build": "slow"},
)


@app.task
async def add(x: int, y: int) -> int:
    return x + y


@app.task(broadcast=True)
async def flush(prefix: str) -> int:
    return 0


@app.task(broadcast=False, queue="q")
async def plain(n: int) -> str:
    return str(n)


async def producer() -> None:
    assert isinstance(plain, Task)  # broadcast=False: a plain Task
    assert_type(await plain.enqueue(1), Job[str])
    assert_type(await add.options(unique_for=60).enqueue(1, 2), Job[int])
    assert_type(await add.options(unique_for=timedelta(minutes=1), unique_key="k").enqueue(1, 2),
                Job[int])  # fmt: skip
    assert_type(await add.options(debounce=5, unique_key="k").enqueue(1, 2), Job[int])
    assert_type(await add.options(wait_if_full=2.5).enqueue(1, 2), Job[int])
    assert_type(app.route("emails.send"), str)

    assert isinstance(flush, BroadcastTask)
    job = await flush.enqueue("cache:")
    assert_type(job, BroadcastJob[int])
    assert_type(await job.result(timeout=5), dict[str, int])
    assert_type(await job.result(return_exceptions=True), dict[str, int | AioqError])
    assert_type(await flush.options(priority=9).enqueue("x"), BroadcastJob[int])
    assert_type(await app.broadcast("flush", "x"), BroadcastJob[Any])
    await flush.enqueue(1)  # type: ignore[arg-type]

    try:
        await add.enqueue(1, 2)
    except QueueFull as exc:
        assert_type(exc.queue, str)
        assert_type(exc.limit, int)
