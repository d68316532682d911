"""``job.done()``: the non-blocking "has it finished?" check (Celery's ``AsyncResult.ready()``)."""

from __future__ import annotations

import asyncio

import pytest

from aioq import App, JobCancelled, JobNotFound, JobStatus, TaskFailed, Worker

pytestmark = pytest.mark.anyio


async def test_done_is_false_until_a_final_state_and_true_in_each(app: App) -> None:
    """False while queued, scheduled or running; True once succeeded, failed, cancelled or
    expired."""
    started = asyncio.Event()
    release = asyncio.Event()

    @app.task
    async def slow() -> int:
        started.set()
        await release.wait()
        return 1

    @app.task
    async def boom() -> None:
        raise ValueError("no good")

    @app.task
    async def quick() -> None:
        pass

    queued = await slow.enqueue()
    scheduled = await quick.options(delay=60).enqueue()
    expired = await quick.options(expires=0.05).enqueue()
    assert await queued.status() is JobStatus.QUEUED
    assert await queued.done() is False
    assert await scheduled.status() is JobStatus.SCHEDULED
    assert await scheduled.done() is False
    await asyncio.sleep(0.1)
    async with Worker(app):
        await asyncio.wait_for(started.wait(), 5)
        assert await queued.status() is JobStatus.RUNNING  # set before the coroutine starts
        assert await queued.done() is False
        release.set()
        assert await queued.result(timeout=5) == 1
        assert await queued.done() is True
        failed = await boom.enqueue()
        with pytest.raises(TaskFailed):
            await failed.result(timeout=5)
        assert await failed.done() is True
        with pytest.raises(TaskFailed):
            await expired.result(timeout=5)
        assert await expired.status() is JobStatus.EXPIRED
        assert await expired.done() is True
    assert await scheduled.cancel() is True
    with pytest.raises(JobCancelled):
        await scheduled.result(timeout=5)
    assert await scheduled.done() is True


async def test_done_on_an_unknown_id_raises_job_not_found(app: App) -> None:
    """Like status(): an id no queue has is JobNotFound, not False."""

    @app.task
    async def quick() -> None:
        pass

    with pytest.raises(JobNotFound):
        await app.job("no-such-job").done()
    with pytest.raises(JobNotFound):
        await quick.job("no-such-job").done()
