"""Type-only checks of the public contract, run by `mypy --strict` (never executed).

`enqueue` is checked against the task's own signature (ParamSpec) and returns `Job[R]` with
the task's own result type, for async and sync tasks and through `options()`.
"""

from __future__ import annotations

from typing import Any, assert_type

from aioq import App, Job, JobInfo, JobStatus, Task, Worker, current_job
from aioq.task import Call

app = App("typing")


@app.task
async def add(x: int, y: int) -> int:
    return x + y


@app.task(name="emails.send", queue="emails", retries=3, backoff=1.0, timeout=30.0)
async def send_email(to: str, *, subject: str = "") -> None:
    return None


@app.task
def checksum(data: bytes) -> str:
    return data.hex()


async def producer() -> None:
    assert isinstance(add, Task)
    job = await add.enqueue(2, 3)
    assert_type(job, Job[int])
    assert_type(await job.result(timeout=1), int)
    assert_type(await job.status(), JobStatus)
    assert_type(await job.done(), bool)
    assert_type(await job.info(), JobInfo)
    assert_type(await job.cancel(), bool)
    async for progress in job.progress():
        assert_type(progress, Any)

    assert_type(await send_email.enqueue("a@b.c", subject="hi"), Job[None])
    assert_type(await checksum.enqueue(b"x"), Job[str])
    assert_type(await add.options(job_id="order-42", queue="high").enqueue(1, 2), Job[int])
    assert_type(add.call(1, 2), Call[int])
    assert_type(await app.enqueue_many([add.call(1, 2), add.call(3, 4)]), list[Job[int]])
    assert_type(await app.enqueue("add", 1, 2), Job[Any])
    assert_type(app.job("order-42"), Job[Any])

    await add.enqueue("2", 3)  # type: ignore[arg-type]
    await add.enqueue(1)  # type: ignore[call-arg]
    await send_email.enqueue("a@b.c", subjet="typo")  # type: ignore[call-arg]
    await add.options(job_id="x").enqueue(1, "y")  # type: ignore[arg-type]


async def consumer() -> None:
    async with Worker(app, concurrency=10, queues=["default", "emails"]) as worker:
        assert_type(worker, Worker)
    await Worker(app, burst=True).run()
    recycling = Worker(app, max_jobs=1000, max_memory=512.0)  # a supervisor replaces it
    assert_type(recycling.recycled, str | None)
    ctx = current_job()
    assert_type(ctx.attempt, int)
    assert_type(ctx.id, str)


async def handles() -> None:
    assert_type(add.job("order-42"), Job[int])
    async with app as entered:
        assert_type(entered, App)


@app.task(autoretry_for=(ConnectionError, TimeoutError), retries=5)
async def fetch(url: str) -> bytes:
    return url.encode()


async def ecosystem() -> None:
    assert_type(await fetch.enqueue("https://example.com"), Job[bytes])
    assert_type(App.from_env(), App)
    assert_type(App.from_env(name="shop", visibility_timeout=10.0), App)
    App.from_env(visibility_timeout="10")  # type: ignore[arg-type]
    App.from_env(visibilty_timeout=10.0)  # type: ignore[call-arg]
    assert_type(app.name, str)
    assert_type(app.redis_url, str)
    assert_type(app.visibility_timeout, float)
    app.name = "other"  # type: ignore[misc]
    app.rebind(redis_url="redis://localhost:6379/1", name="other")


async def testing_helpers() -> None:
    from aioq.testing import drain, isolated, queued, redis_server

    async with redis_server() as url:
        assert_type(url, str)
        async with isolated(app, url) as bound:
            assert_type(bound, App)
            assert_type(await queued(bound, task=add), list[JobInfo])
            assert_type(await queued(bound, "emails.send", queue="emails"), list[JobInfo])
            assert_type(await drain(bound), None)
