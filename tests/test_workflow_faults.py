"""Workflow transitions happen exactly once: after a member's worker is SIGKILLed and the
member re-runs, when the last members finish at the same instant on two workers, when a
hand-over is told twice or by two processes at once, when a worker dies before passing a
hand-over on, and never from a fenced (stale) worker's completion. Real redis-server, worker
subprocesses on ``tests/apps/flows.py`` (members and callbacks on different queues)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aioq import App, Call, JobStatus, Worker, chain, chord
from aioq.handover import hand_over, sweep
from aioq.keys import PRIORITIES
from aioq.scripts import WorkerArgs
from tests.apps.flows import side_key
from tests.helpers import Spawned, WorkerProcess, eventually

pytestmark = pytest.mark.anyio

TARGET = "tests.apps.flows:app"
QUEUES = ("--queue", "members", "--queue", "callbacks")
Spawn = Callable[..., WorkerProcess]


@pytest.fixture
def workers(redis_url: str) -> Iterator[Spawn]:
    spawned = Spawned()

    def spawn(app_name: str, vt: float, *args: str) -> WorkerProcess:
        env = {"AIOQ_TEST_APP": app_name, "AIOQ_TEST_VT": str(vt)}
        return spawned.start(TARGET, redis_url, env, *QUEUES, *args)

    yield spawn
    spawned.close()


def member(app: App, i: int, **kwargs: object) -> Call[Any]:
    """A step of tests/apps/flows.py's member task, by name (a producer without its code)."""
    return app.options("member", queue="members").s(i, **kwargs)


def collect(app: App, tag: str) -> Call[Any]:
    return app.options("collect", queue="callbacks").s(tag)


async def test_member_rerun_after_sigkill_fires_the_callback_once(app: App, workers: Spawn) -> None:
    """A member SIGKILLs its worker on its first run; another worker re-runs it after the
    lease lapses; the chord's callback (another queue) runs exactly once, with every value."""
    vt = 1.5
    a, b = workers(app.name, vt), workers(app.name, vt)
    header = [member(app, i, kill=(i == 7)) for i in range(20)]
    job = await chord(header, collect(app, "k")).enqueue()
    assert await job.result(timeout=40) == sum(range(20))
    runs = {
        k.decode(): int(v) for k, v in (await app.redis.hgetall(side_key(app.name, "runs"))).items()
    }
    assert sum(runs.values()) >= 21  # the killer ran twice (and whatever else its worker held)
    assert await app.redis.hgetall(side_key(app.name, "callbacks")) == {b"k": b"1"}
    assert not a.alive or not b.alive  # one worker was killed


async def test_last_members_finishing_together_on_two_workers_fire_once(
    app: App, workers: Spawn
) -> None:
    """40 chords of 2 members whose members finish at the same instant on two workers (each
    worker runs one member per chord): every callback runs exactly once."""
    w1 = workers(app.name, 5.0, "--concurrency", "40")
    w2 = workers(app.name, 5.0, "--concurrency", "40")
    await _parked(app, w1, w2)
    until = time.time() + 1.5
    jobs = [
        await chord(
            [member(app, 1, until=until), member(app, 2, until=until)],
            collect(app, f"c{n}"),
        ).enqueue()
        for n in range(40)
    ]
    results = await asyncio.gather(*(j.result(timeout=30) for j in jobs))
    assert results == [3] * 40
    counts = await app.redis.hgetall(side_key(app.name, "callbacks"))
    assert {k.decode(): int(v) for k, v in counts.items()} == {f"c{n}": 1 for n in range(40)}
    starts = [(await j.info()).started_at for j in jobs]
    assert all(s is not None for s in starts)


async def _parked(app: App, *ws: WorkerProcess) -> None:
    from tests.helpers import processes_parked

    app.keys("members")
    app.keys("callbacks")
    await processes_parked(app, *ws)


async def test_a_hand_over_told_twice_and_by_two_processes_at_once_acts_once(
    app: App, redis_url: str
) -> None:
    """A chord member on another queue than its group's join is told to the join by a second
    script: that hand-over, passed on again and again and by another App at the same time,
    counts the member once; the join fires once and starts the callback once."""

    @app.task(queue="n")
    async def first(i: int) -> int:
        return i

    @app.task(queue="m")
    async def one(i: int) -> int:
        return i

    @app.task(queue="c")
    async def total(values: list[int]) -> int:
        return sum(values)

    # the join lives beside the first member (queue n); the member on m reaches it remotely
    job = await chord([first.s(1), one.s(2)], total.s()).enqueue()
    wargs = WorkerArgs("hand", app.max_deliveries, app.result_ttl, app.dead_letter_max)

    async def run_by_hand(queue: str, value: bytes) -> list[list[bytes]]:
        keys = app.keys(queue)
        (r,) = await app.scripts.fetch(keys, wargs, 10, 0)
        fenced, handed = await app.scripts.complete(
            keys, wargs, ["ok", r[0], r[1], r[2], value, "", "", 0]
        )
        assert fenced == []
        return handed

    m, n = app.keys("m"), app.keys("n")
    handed = await run_by_hand("m", b"2")
    assert len(handed) == 1  # the join, on another queue
    assert await app.redis.zcard(m.flows) == 1  # in the outbox until passed on
    other = App(app.name, redis_url=redis_url)
    try:
        pending = [(m, h) for h in handed]
        await asyncio.gather(
            hand_over(app, pending), hand_over(other, pending), hand_over(app, pending)
        )
        await hand_over(app, pending)
    finally:
        await other.aclose()
    assert await app.redis.zcard(m.flows) == 0
    # the member beside its join is counted in its own completion, which fires the join:
    # what is handed over is the join's start of the callback (another queue)
    handed = await run_by_hand("n", b"1")
    assert len(handed) == 1
    assert b".g" in handed[0][0]  # the join's id (canvas.py names joins "<flow>.g<n>")
    await asyncio.gather(*(hand_over(app, [(n, h) for h in handed]) for _ in range(3)))
    c = app.keys("c")
    assert await app.redis.xlen(c.stream) == 1  # the callback, queued once
    assert await job.status() is JobStatus.QUEUED
    assert await app.redis.zcard(n.flows) == 0
    async with Worker(app, queues=["c"]):
        assert await job.result(timeout=5) == 3


async def test_a_fenced_completion_does_not_advance_the_workflow(app: App) -> None:
    """A worker whose lease was taken over completes its copy: fenced, nothing handed over;
    the new owner's completion starts the next step."""

    @app.task
    async def first() -> int:
        return 1

    @app.task(queue="other")  # another queue: the hand-over is a second script there
    async def second(x: int) -> int:
        return x + 1

    job = await chain(first.si(), second.s()).enqueue()
    keys = app.keys()
    stale = WorkerArgs("stale", app.max_deliveries, app.result_ttl, app.dead_letter_max)
    owner = WorkerArgs("owner", app.max_deliveries, app.result_ttl, app.dead_letter_max)
    (row,) = await app.scripts.fetch(keys, stale, 10, 0)
    _, taken, _ = await app.scripts.reclaim(keys, owner, 0, 10, [b"0-0"] * PRIORITIES)
    assert [t[1] for t in taken] == [row[1]]  # the owner took it over
    fenced, handed = await app.scripts.complete(
        keys, stale, ["ok", row[0], row[1], row[2], b"1", "", "", 0]
    )
    assert fenced == [row[1]]
    assert handed == []
    assert await job.status() is JobStatus.SCHEDULED  # still held
    assert await app.redis.zcard(keys.flows) == 0
    fenced, handed = await app.scripts.complete(
        keys, owner, ["ok", taken[0][0], taken[0][1], taken[0][2], b"1", "", "", 0]
    )
    assert fenced == []
    assert len(handed) == 1
    await hand_over(app, [(keys, h) for h in handed])
    assert await job.status() is JobStatus.QUEUED


async def test_a_hand_over_a_dead_worker_left_is_swept_by_another(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that finishes a step and dies before passing it on leaves it in the outbox;
    another worker's sweep passes it on (after SWEEP_AFTER; shortened here)."""

    @app.task
    async def step(x: int) -> int:
        return x * 2

    @app.task(queue="other")  # steps alternate queues: every hand-over crosses slots
    async def step2(x: int) -> int:
        return x * 2

    lost = Worker(app, queues=["default", "other"])
    lost.completer._on_handed = lambda keys, rows: None  # the worker "dies" before passing on
    job = await chain(step.s(1), step2.s(), step.s()).enqueue()
    async with lost:

        async def first_done() -> bool:
            return await app.redis.zcard(app.keys().flows) == 1

        await eventually(first_done, 5, "the first step finished, its hand-over not passed on")
    assert await job.status() is JobStatus.SCHEDULED
    monkeypatch.setattr("aioq.handover.SWEEP_AFTER", 0.2)
    monkeypatch.setattr("aioq.worker.flows.SWEEP_EVERY", 0.1)
    async with Worker(app, queues=["default", "other"]):
        assert await job.result(timeout=10) == 8
    assert await app.redis.zcard(app.keys().flows) == 0
    assert await sweep(app, app.keys(), min_age=0) == 0
