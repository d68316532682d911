"""Flow control by key across worker processes, against real redis-server processes: per-key
concurrency never exceeded (also when a worker holding a key's jobs is SIGKILLed), per-key
rate limits across workers, and the fairness bound with a 100,000-job backlog on one key.

Subprocess workers run ``tests/apps/keyed.py`` on the app named by the test's ``app`` fixture.
Concurrency is measured from what Redis recorded: the job records' started_at/finished_at, and
each attempt's start and end noted by the task with Redis' clock (a killed attempt has no
end: it ran until the kill).
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from aioq import App, JobStatus
from aioq.embedded import EmbeddedRedis
from aioq.keys import key_group
from tests.apps.keyed import attempts_key
from tests.helpers import Spawned, WorkerProcess, eventually, processes_parked
from tests.test_keys import max_in_window, peak_overlap, spans_of

pytestmark = pytest.mark.anyio

TARGET = "tests.apps.keyed:app"

Spawn = Callable[..., WorkerProcess]


@pytest.fixture
def workers(redis_url: str) -> Iterator[Spawn]:
    """``workers(app_name, vt, *cli_args, url=)`` starts a worker subprocess; all are killed
    at teardown and their output printed (shown when the test fails)."""
    spawned = Spawned()

    def spawn(app_name: str, vt: float, *args: str, url: str | None = None) -> WorkerProcess:
        env = {"AIOQ_TEST_APP": app_name, "AIOQ_TEST_VT": str(vt)}
        return spawned.start(TARGET, url or redis_url, env, *args)

    yield spawn
    spawned.close()


async def attempt_spans(
    app: App, killed_at_us: int | None = None
) -> dict[str, list[tuple[int, int]]]:
    """Per key, every attempt's (start, end) in µs of Redis' clock; an attempt that never
    ended ran until ``killed_at_us`` (its worker was killed)."""
    starts: dict[tuple[str, str], tuple[str, int]] = {}
    ends: dict[tuple[str, str], int] = {}
    for raw in await app.redis.lrange(attempts_key(app.name), 0, -1):
        what, jid, attempt, key, at = raw.decode().split()
        if what == "start":
            starts[jid, attempt] = (key, int(at))
        else:
            ends[jid, attempt] = int(at)
    out: dict[str, list[tuple[int, int]]] = {}
    for run, (key, at) in starts.items():
        end = ends.get(run)
        if end is None:
            assert killed_at_us is not None, f"attempt {run} of key {key} never ended"
            end = killed_at_us
        out.setdefault(key, []).append((at, end))
    return out


async def all_done(app: App, ids: list[str]) -> bool:
    for jid in ids:
        if (await app.job(jid).status()) is not JobStatus.SUCCEEDED:
            return False
    return True


async def redis_now_us(app: App) -> int:
    secs, micros = await app.redis.time()
    return int(secs) * 1_000_000 + int(micros)


@pytest.mark.slow
async def test_key_concurrency_is_never_exceeded_across_worker_processes(
    app: App, workers: Spawn
) -> None:
    """Three workers with room for every job: each key of key_concurrency 2 (and one of 1)
    runs exactly that many jobs at once, by the records and by the attempts' own notes."""
    ws = [workers(app.name, 5, "--concurrency", "8") for _ in range(3)]
    await processes_parked(app, *ws)
    # enqueued by name, the key given (this process does not import the tasks): the limits
    # are those the workers' code declares (2 for pair, 1 for single)
    calls = [app.options("pair", concurrency_key=k).call(k, 60) for _ in range(16) for k in "abc"]
    calls += [app.options("single", concurrency_key="s").call("s", 40) for _ in range(10)]
    jobs = await app.enqueue_many(calls)
    await eventually(lambda: all_done(app, [j.id for j in jobs]), 30, "every keyed job done")
    by_key: dict[str, list[str]] = {}
    for c, j in zip(calls, jobs, strict=True):
        by_key.setdefault(c.args[0], []).append(j.id)
    limits = {"a": 2, "b": 2, "c": 2, "s": 1}
    for key, ids in by_key.items():
        assert peak_overlap(await spans_of(app, ids)) == limits[key], key
    for key, spans in (await attempt_spans(app)).items():
        assert peak_overlap(spans) == limits[key], key  # type: ignore[arg-type]
    workers_used = {(await app.job(j.id).info()).worker for j in jobs}
    assert len(workers_used) >= 2, "the jobs did not spread over the workers"
    assert {(await app.job(j.id).info()).attempts for j in jobs} == {1}


@pytest.mark.slow
async def test_a_killed_workers_places_come_back_when_its_leases_lapse(
    app: App, workers: Spawn
) -> None:
    """A worker SIGKILLed while it runs both jobs of a key limited to 2: the key's waiting jobs
    do not start while the dead worker's leases last (its jobs may still run for all Redis
    knows); once they lapse another worker runs the killed jobs again and the rest follow. At
    no instant did more than 2 attempts of the key run, counting the killed ones until the
    kill."""
    vt = 1.5
    first = workers(app.name, vt, "--concurrency", "10")
    await processes_parked(app, first)
    pair = app.options("pair", concurrency_key="k")
    jobs = await app.enqueue_many([pair.call("k", 400) for _ in range(8)])
    ids = [j.id for j in jobs]

    async def two_running() -> bool:
        return len(await app.redis.lrange(attempts_key(app.name), 0, -1)) >= 2

    await eventually(two_running, 10, "two jobs of the key running on the first worker")
    second = workers(app.name, vt, "--concurrency", "10")
    await processes_parked(app, second)
    first.signal(signal.SIGKILL)
    assert await first.exited(5) == -signal.SIGKILL
    killed_at = await redis_now_us(app)
    killed = {jid for jid in ids if (await app.job(jid).info()).status is JobStatus.RUNNING}
    assert len(killed) == 2, "the kill did not land while the key's two places were taken"

    await eventually(lambda: all_done(app, ids), 30, "every job of the key done")
    spans = (await attempt_spans(app, killed_at))["k"]
    assert peak_overlap(spans) == 2  # type: ignore[arg-type]
    after = sorted(s for s, _ in spans if s > killed_at)
    # nothing of the key started until the dead worker's leases lapsed (renewed every vt/3,
    # so lapsed at the earliest 2/3 vt after the kill), then the killed jobs ran again
    assert after[0] - killed_at > vt * 1_000_000 / 2
    for jid in killed:
        info = await app.job(jid).info()
        assert info.attempts == 2
        assert f":{second.pid}:" in (info.worker or "")
    assert await app.redis.llen(app.keys().keyrun(key_group("pair", "k"))) == 0


@pytest.mark.slow
async def test_key_rate_limit_holds_across_worker_processes(app: App, workers: Spawn) -> None:
    """Two workers, key_rate_limit 5/s: never more than 5 starts of one key in any second (by
    the records' started_at), each job started once, and another key is not held back."""
    ws = [workers(app.name, 5, "--concurrency", "10") for _ in range(2)]
    await processes_parked(app, *ws)
    metered = app.options("metered", concurrency_key="m")
    jobs = await app.enqueue_many([metered.call("m") for _ in range(13)])
    metered = app.options("metered", concurrency_key="o")
    other = await app.enqueue_many([metered.call("o") for _ in range(3)])
    await eventually(lambda: all_done(app, [j.id for j in jobs + other]), 20, "all started")
    infos = [await j.info() for j in jobs]
    starts = [i.started_at for i in infos if i.started_at]
    assert max_in_window(starts, 1.0) == 5
    assert {i.attempts for i in infos} == {1}
    assert (max(starts) - min(starts)).total_seconds() > 2  # 13 starts need 3 windows
    other_starts = [(await j.info()).started_at for j in other]
    assert all(t is not None and t < max(starts) for t in other_starts)


@pytest.fixture
async def big_redis() -> AsyncIterator[str]:
    """A private redis-server for the 100,000-job backlog (its memory goes when it stops)."""
    with EmbeddedRedis() as server:
        yield server.url


@pytest.mark.slow
async def test_a_new_key_starts_within_one_fetch_batch_of_a_100k_backlog(
    big_redis: str, workers: Spawn
) -> None:
    """One key with 100,000 jobs queued (key_concurrency 2) and two workers busy with it:
    another key's first job starts within one fetch batch (the worker's fetch size, 5 here),
    not after the backlog: the streams never hold more than the backlog key's 2 places."""
    # the tasks' own module: its concurrency_key function runs for each of the 100,000 jobs
    from tests.apps import keyed

    app = keyed.app
    app.rebind(redis_url=big_redis, name=f"fair{time.time_ns()}")
    try:
        n = 100_000
        t0 = time.monotonic()
        for _ in range(0, n, 20_000):
            await app.enqueue_many([keyed.pair.call("big", 1) for _ in range(20_000)])
        enqueue_s = time.monotonic() - t0
        big = key_group("pair", "big")
        assert await app.redis.llen(app.keys().keywait(big)) == n - 2
        assert await app.redis.xlen(app.keys().stream) == 2
        ws = [workers(app.name, 5, "--concurrency", "10", url=big_redis) for _ in range(2)]

        async def backlog_moving() -> bool:
            return await app.redis.llen(attempts_key(app.name)) >= 200

        await eventually(backlog_moving, 30, "the workers running the backlog")
        assert all(w.alive for w in ws)
        assert await app.redis.xlen(app.keys().stream) <= 2
        job = await keyed.pair.enqueue("new", 1)
        await eventually(lambda: all_done(app, [job.id]), 10, "the new key's job done")
        info = await job.info()
        assert info.enqueued_at is not None
        assert info.started_at is not None
        # the backlog's jobs that started while the new key's job waited
        waited = (info.enqueued_at.timestamp(), info.started_at.timestamp())
        overtaking = 0
        for raw in await app.redis.lrange(attempts_key(app.name), 0, -1):
            what, _, _, key, at = raw.decode().split()
            if what == "start" and key == "big" and waited[0] <= int(at) / 1e6 < waited[1]:
                overtaking += 1
        assert overtaking <= 5, f"{overtaking} jobs of the backlog started before the new key's"
        assert (info.started_at - info.enqueued_at).total_seconds() < 1.0
        assert await app.redis.llen(app.keys().keywait(big)) > n - 20_000  # still a backlog
        print(f"enqueued {n:,} keyed jobs in {enqueue_s:.2f}s; {overtaking} overtook")
    finally:
        await app.aclose()
