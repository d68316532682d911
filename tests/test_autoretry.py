"""``@app.task(autoretry_for=...)``: only failures with those exception types (subclasses
included) are retried; any other fails the job at once; without it every exception is."""

from __future__ import annotations

import asyncio

import pytest

from aioq import App, Retry, TaskFailed, Worker, current_job

pytestmark = pytest.mark.anyio


async def test_only_the_listed_exceptions_and_their_subclasses_are_retried(app: App) -> None:
    raised: dict[str, list[int]] = {"flaky": [], "broken": []}

    @app.task(autoretry_for=(ConnectionError,), retries=5, backoff=0)
    async def flaky(kind: str) -> int:
        attempt = current_job().attempt
        raised[kind].append(attempt)
        if kind == "broken":
            raise ValueError("bad input")
        if attempt < 3:
            raise ConnectionResetError("peer went away")  # a subclass of ConnectionError
        return attempt

    async with Worker(app):
        ok = await flaky.enqueue("flaky")
        assert await ok.result(timeout=10) == 3
        bad = await flaky.enqueue("broken")
        with pytest.raises(TaskFailed, match="bad input") as failed:
            await bad.result(timeout=10)
    assert failed.value.exc_type == "ValueError"
    assert raised == {"flaky": [1, 2, 3], "broken": [1]}  # failed at once, 5 retries unspent
    info = await bad.info()
    assert (info.attempts, info.status.value, info.history) == (1, "failed", [])


async def test_without_autoretry_for_every_exception_is_retried(app: App) -> None:
    @app.task(retries=2, backoff=0)
    async def always(n: int) -> None:
        raise ValueError(f"no {n}")

    async with Worker(app):
        job = await always.enqueue(1)
        with pytest.raises(TaskFailed, match="no 1"):
            await job.result(timeout=10)
    assert (await job.info()).attempts == 3


async def test_retry_and_timeouts_under_autoretry_for(app: App) -> None:
    """``raise Retry`` retries whatever autoretry_for says; a timed-out attempt is a
    TimeoutError, retried only when TimeoutError (or a base of it) is listed."""

    @app.task(autoretry_for=(ConnectionError,), retries=1, backoff=0)
    async def asks() -> int:
        if current_job().attempt == 1:
            raise Retry()
        return current_job().attempt

    @app.task(autoretry_for=(ConnectionError,), retries=1, backoff=0, timeout=0.05)
    async def slow_unlisted() -> None:
        await asyncio.sleep(10)

    @app.task(autoretry_for=(OSError,), retries=1, backoff=0, timeout=0.05)
    async def slow_listed() -> None:
        await asyncio.sleep(10)

    async with Worker(app):
        assert await (await asks.enqueue()).result(timeout=10) == 2
        unlisted, listed = await slow_unlisted.enqueue(), await slow_listed.enqueue()
        for job in (unlisted, listed):
            with pytest.raises(TaskFailed, match="timed out"):
                await job.result(timeout=10)
    assert (await unlisted.info()).attempts == 1
    assert (await listed.info()).attempts == 2


async def test_autoretry_for_must_hold_exception_classes(app: App) -> None:
    async def fn() -> None: ...

    with pytest.raises(TypeError, match=r"task 'fn': autoretry_for must hold exception .*'x'"):
        app.task(autoretry_for=(ValueError, "x"))(fn)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"task 'fn': .*got <class 'int'>"):
        app.task(autoretry_for=int)(fn)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"task 'fn': autoretry_for must be an exception class"):
        app.task(autoretry_for="ValueError")(fn)  # type: ignore[arg-type]
    assert "fn" not in app.tasks  # nothing was registered
    task = app.task(autoretry_for=KeyError)(fn)  # one class alone is fine
    assert task.autoretry_for == (KeyError,)
