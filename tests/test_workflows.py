"""Workflows in-process: chain, group, chord, callbacks, nesting, failure and cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aioq import App, JobCancelled, JobStatus, TaskFailed, Worker, chain, chord, group

pytestmark = pytest.mark.anyio


def _tasks(app: App) -> dict[str, Any]:
    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    @app.task(queue="other")
    async def mul(x: int, y: int) -> int:
        return x * y

    @app.task
    async def tsum(values: list[int]) -> int:
        return sum(values)

    @app.task
    async def boom(x: int) -> int:
        raise ValueError(f"boom {x}")

    return {"add": add, "mul": mul, "tsum": tsum, "boom": boom}


async def test_chain_passes_each_result_on_across_queues(app: App) -> None:
    """The DESIGN example: ((1 + 2) + 10) * 3 == 39, the last step on another queue."""
    t = _tasks(app)
    async with Worker(app, queues=["default", "other"]):
        job = await chain(t["add"].s(1, 2), t["add"].s(10), t["mul"].s(3)).enqueue()
        assert await job.result(timeout=10) == 39
        info = await job.info()
    assert info.queue == "other"
    assert info.args == [3]  # its own arguments; the 13 came from the step before
    assert info.workflow is not None


async def test_group_results_in_member_order_progress_and_handle_elsewhere(
    app: App, redis_url: str
) -> None:
    t = _tasks(app)
    async with Worker(app, queues=["default", "other"]):
        g = await group(t["add"].s(i, i) for i in range(10)).enqueue()
        assert await g.results(timeout=10) == [2 * i for i in range(10)]
        assert await g.progress() == (10, 10)
    other = App(app.name, redis_url=redis_url)
    try:
        assert await other.group_job(g.id).results(timeout=5) == [2 * i for i in range(10)]
    finally:
        await other.aclose()


async def test_chord_callback_gets_the_list(app: App) -> None:
    t = _tasks(app)
    async with Worker(app, queues=["default", "other"]):
        job = await chord([t["add"].s(i, i) for i in range(10)], t["tsum"].s()).enqueue()
        assert await job.result(timeout=10) == 90


async def test_failed_step_cancels_the_rest_and_names_the_step(app: App) -> None:
    t = _tasks(app)
    async with Worker(app, queues=["default", "other"]):
        job = await chain(t["add"].s(1, 2), t["boom"].s(), t["mul"].s(3)).enqueue()
        with pytest.raises(TaskFailed) as caught:
            await job.result(timeout=10)
        assert await job.status() is JobStatus.CANCELLED
    assert caught.value.exc_type == "ValueError"
    assert "boom" in str(caught.value)
    assert "boom 3" in str(caught.value)


async def test_chord_member_failure_cancels_callback_or_marks_it(app: App) -> None:
    t = _tasks(app)
    async with Worker(app, queues=["default", "other"]):
        job = await chord([t["add"].s(1, 1), t["boom"].s(2)], t["tsum"].s()).enqueue()
        with pytest.raises(TaskFailed, match="boom 2"):
            await job.result(timeout=10)

        @app.task
        async def count_ok(values: list[Any]) -> list[Any]:
            return [v if not isinstance(v, dict) else v["failed"]["exc_type"] for v in values]

        job2 = await chord(
            [t["add"].s(1, 1), t["boom"].s(2)], count_ok.s(), return_exceptions=True
        ).enqueue()
        assert await job2.result(timeout=10) == [2, "ValueError"]


async def test_callbacks_on_success_and_on_failure_after_retries(app: App) -> None:
    seen: list[Any] = []

    @app.task
    async def note(value: Any) -> None:
        seen.append(value)

    @app.task(retries=2, backoff=0)
    async def flaky(x: int) -> int:
        raise RuntimeError("nope")

    @app.task
    async def fine(x: int) -> int:
        return x * 2

    async with Worker(app):
        ok = await fine.options(on_success=note.s(), on_failure=note.s()).enqueue(21)
        assert await ok.result(timeout=5) == 42
        bad = await flaky.options(on_success=note.s(), on_failure=note.s()).enqueue(1)
        with pytest.raises(TaskFailed):
            await bad.result(timeout=5)
        for _ in range(200):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.02)
    assert sorted(map(str, seen)) == sorted(["42", bad.id])
    assert (await bad.info()).attempts == 3


async def test_cancel_of_the_workflow_job_cancels_every_step(app: App) -> None:
    started = asyncio.Event()

    @app.task
    async def slow(x: int) -> int:
        started.set()
        await asyncio.sleep(30)
        return x

    t = _tasks(app)
    async with Worker(app, queues=["default", "other"]):
        job = await chain(slow.s(1), t["add"].s(1), t["mul"].s(2)).enqueue()
        await asyncio.wait_for(started.wait(), 5)
        assert await job.cancel()
        with pytest.raises(JobCancelled):
            await job.result(timeout=5)
        first = (await job.info()).workflow
    assert first is not None


async def test_nesting_group_in_chain_group_of_chains_chain_from_group(app: App) -> None:
    t = _tasks(app)
    async with Worker(app, queues=["default", "other"]):
        j1 = await chain(
            t["add"].s(1, 1), group(t["add"].s(1), t["add"].s(2)), t["tsum"].s()
        ).enqueue()
        assert await j1.result(timeout=10) == 3 + 4
        g = await group(chain(t["add"].s(1, 1), t["mul"].s(10)), chain(t["add"].s(2, 2))).enqueue()
        assert await g.results(timeout=10) == [20, 4]
        j3 = await chain(group(t["add"].s(1, 1), t["add"].s(2, 2)), t["tsum"].s()).enqueue()
        assert await j3.result(timeout=10) == 6
