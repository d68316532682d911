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


async def _keys_of(app: App) -> list[bytes]:
    return sorted([k async for k in app.redis.scan_iter(match=f"aioq:{{{app.name}*")])


async def test_bad_workflows_fail_before_anything_is_written(app: App) -> None:
    """Empty chain or group, a non-call step, a callback with the wrong arity, a first step
    missing arguments, an unknown task name: clear errors naming it, nothing written."""
    t = _tasks(app)
    with pytest.raises(ValueError, match="chain\\(\\) needs at least one step"):
        chain()
    with pytest.raises(ValueError, match="group\\(\\) needs at least one member"):
        group([])
    with pytest.raises(TypeError, match="chain\\(\\) step 1 is 42"):
        chain(t["add"].s(1, 2), 42)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="group\\(\\) member 0 is 'x'"):
        group("x", t["add"].s(1, 2))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="chord\\(\\) callback must be a task's call"):
        chord([t["add"].s(1, 1)], t["tsum"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_success must be a task's call"):
        t["add"].options(on_success=t["tsum"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"no task named 'tasks\.add'.*its tasks: add"):
        app.s("tasks.add", 1, 2)
    # wrong arity of a callback (add takes two: the list and one more) and a first step
    # short of an argument: found when the workflow is encoded, before any write
    with pytest.raises(TypeError, match=r"add.s\(\) receives the previous step's result"):
        await chord([t["add"].s(1, 1)], t["add"].s()).enqueue()
    with pytest.raises(TypeError, match="task 'add' called with bad arguments"):
        await chain(t["add"].s(1), t["tsum"].s()).enqueue()
    with pytest.raises(TypeError, match="positional argument 0 of task 'add'"):
        await chain(t["add"].s(1, 1), t["add"].s(object())).enqueue()
    assert await _keys_of(app) == []


async def test_workflow_state_expires_and_nothing_is_left_behind(app: App) -> None:
    """Held steps and group records expire after workflow_ttl unless reached; once a chord
    has run, its join and steps expire with result_ttl and every outbox is empty."""
    t = _tasks(app)
    job = await chord([t["add"].s(i, i) for i in range(3)], t["tsum"].s()).enqueue()
    held_ttl = await app.redis.ttl(app.keys().job(job.id))
    assert 0 < held_ttl <= app.workflow_ttl
    flow_id = (await job.info()).workflow
    assert flow_id is not None
    records = [k for k in await _keys_of(app) if b":flow:" in k]
    assert len(records) == 2  # the workflow's record and the group's join
    for k in records:
        assert 0 < await app.redis.ttl(k) <= app.workflow_ttl + app.result_ttl
    async with Worker(app):
        assert await job.result(timeout=10) == 6
    for k in await _keys_of(app):
        ttl = await app.redis.ttl(k)
        if b":job:" in k or b":g" in k:
            assert 0 < ttl <= app.result_ttl, k
    assert await app.redis.zcard(app.keys().flows) == 0


async def test_a_group_of_10000_members(app: App) -> None:
    """10,000 members are enqueued in pipelined batches; results come back in order."""

    @app.task
    async def ident(i: int) -> int:
        return i

    async with Worker(app, concurrency=200):
        g = await group(ident.s(i) for i in range(10_000)).enqueue()
        assert await g.results(timeout=60) == list(range(10_000))
        assert await g.progress() == (10_000, 10_000)


async def test_group_cancel_cancels_every_member_not_finished(app: App) -> None:
    """Two members running and four queued: all six end cancelled, the group with them."""
    running: list[int] = []
    two = asyncio.Event()

    @app.task
    async def nap(i: int) -> int:
        running.append(i)
        if len(running) == 2:
            two.set()
        await asyncio.sleep(30)
        return i

    async with Worker(app, concurrency=2):
        g = await group(nap.s(i) for i in range(6)).enqueue()
        await asyncio.wait_for(two.wait(), 5)
        assert await g.cancel()
        with pytest.raises(JobCancelled):
            await g.results(timeout=10)
        done, total = await g.progress()
    assert (done, total) == (6, 6)


async def test_drain_runs_a_whole_workflow_across_queues(app: App) -> None:
    """aioq.testing.drain runs a chord whose callback lives on another queue to its end."""
    from aioq.testing import drain

    t = _tasks(app)
    job = await chord([t["mul"].s(i, 2) for i in range(4)], t["tsum"].s()).enqueue()
    await drain(app)
    assert await job.status() is JobStatus.SUCCEEDED
    assert await job.result(timeout=1) == 12
