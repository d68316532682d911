"""Fault injection against real redis-server processes: killed, frozen and stopped workers,
poison jobs, garbage in the stream, and Redis restarts under a running worker.

Subprocess workers run ``tests/apps/faulty.py`` on the app named by the test's ``app`` fixture
(passed through the environment), so the test enqueues by task name and reads the same keys.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from aioq import App, JobStatus, Retry, TaskFailed, Worker, current_job
from aioq.embedded import EmbeddedRedis
from aioq.keys import GROUP
from aioq.worker.core import cancel_and_wait
from tests.apps.faulty import side_key
from tests.helpers import Spawned, WorkerProcess, eventually, processes_parked

pytestmark = pytest.mark.anyio

TARGET = "tests.apps.faulty:app"


# -- helpers ------------------------------------------------------------------------------


Spawn = Callable[..., WorkerProcess]


@pytest.fixture
def workers(redis_url: str) -> Iterator[Spawn]:
    """Start worker subprocesses: ``workers(app_name, vt, *cli_args, url=, max_deliveries=)``;
    every one is killed at teardown and its output printed (shown when the test fails)."""
    spawned = Spawned()

    def spawn(
        app_name: str, vt: float, *args: str, url: str | None = None, max_deliveries: int = 5
    ) -> WorkerProcess:
        env = {
            "AIOQ_TEST_APP": app_name,
            "AIOQ_TEST_VT": str(vt),
            "AIOQ_TEST_MAX_DELIVERIES": str(max_deliveries),
        }
        return spawned.start(TARGET, url or redis_url, env, *args)

    yield spawn
    spawned.close()


async def parked(app: App, w: WorkerProcess, timeout: float = 15) -> None:
    """Wait until worker ``w`` is parked in a blocking XREADGROUP: ready, and idle."""
    await processes_parked(app, w, timeout=timeout)


async def consumer_of(app: App, w: WorkerProcess, timeout: float = 15) -> str:
    """Wait until worker ``w`` has been delivered entries of the app's default stream; its
    consumer name (Redis 7 creates a consumer only when something is delivered to it)."""

    async def find() -> str | None:
        if not w.alive:
            raise AssertionError(f"worker {w.pid} exited early:\n{w.output}")
        try:
            consumers = await app.redis.xinfo_consumers(app.keys().stream, GROUP)
        except ResponseError:  # no stream or group yet
            return None
        for c in consumers:
            name = c["name"].decode()
            if f":{w.pid}:" in name:
                return name
        return None

    return await eventually(find, timeout, f"worker {w.pid} reading the stream")


async def pending_count(app: App) -> int:
    summary = await app.redis.xpending(app.keys().stream, GROUP)
    return int(summary["pending"])


async def statuses(app: App, job_ids: list[str]) -> list[str | None]:
    async with app.redis.pipeline(transaction=False) as pipe:
        for jid in job_ids:
            pipe.hget(app.keys().job(jid), "status")
        raw = await pipe.execute()
    return [None if s is None else s.decode() for s in raw]


async def running_on(app: App, job_id: str, w: WorkerProcess) -> bool:
    info = await app.job(job_id).info()
    return info.status is JobStatus.RUNNING and f":{w.pid}:" in (info.worker or "")


async def dead_letters(app: App) -> list[dict[str, str]]:
    rows = await app.redis.xrange(app.keys().dead)
    return [{k.decode(): v.decode(errors="replace") for k, v in f.items()} for _, f in rows]


async def assert_stream_empty(app: App) -> None:
    """Finished entries are XACKed and XDELed: nothing is left in the stream or pending."""
    stream = app.keys().stream
    assert await app.redis.xlen(stream) == 0
    assert await pending_count(app) == 0


# -- 1. SIGKILL mid-batch -----------------------------------------------------------------


@pytest.mark.slow
async def test_sigkill_mid_batch_loses_nothing_and_reruns_only_in_flight_jobs(
    app: App, workers: Spawn
) -> None:
    """A worker SIGKILLed amid 2,000 jobs loses none; only jobs it held at the kill run twice."""
    n, concurrency, vt = 2000, 50, 1.5
    jobs = await app.enqueue_many([app.options("work").call(i, 5 + i % 16) for i in range(n)])
    ids = [j.id for j in jobs]
    starts, ends = side_key(app.name, "starts"), side_key(app.name, "ends")

    first = workers(app.name, vt, "--concurrency", str(concurrency))
    consumer = await consumer_of(app, first)

    async def some_done() -> bool:
        return await app.redis.hlen(ends) >= 400

    await eventually(some_done, 20, "400 jobs finished by the first worker")
    first.signal(signal.SIGKILL)
    assert await first.exited(5) == -signal.SIGKILL

    # What the dead worker held at the kill: its pending entries, frozen until reclaimed.
    held = await app.redis.xpending_range(
        app.keys().stream, GROUP, "-", "+", 10 * n, consumername=consumer
    )
    async with app.redis.pipeline(transaction=False) as pipe:
        for p in held:
            pipe.xrange(app.keys().stream, p["message_id"], p["message_id"])
        entries = await pipe.execute()
    in_flight = {e[0][1][b"id"].decode() for e in entries if e}
    ended_before = await app.redis.hlen(ends)
    assert 0 < ended_before < n, "the kill did not land mid-batch"
    assert in_flight, "the killed worker held no jobs"

    second = workers(app.name, vt, "--concurrency", str(concurrency))

    async def all_ended() -> bool:
        return await app.redis.hlen(ends) == n

    await eventually(all_ended, 40, "every job ran to its end")

    async def all_succeeded() -> bool:
        return set(await statuses(app, ids)) == {"succeeded"}

    await eventually(all_succeeded, 10, "every job recorded as succeeded")
    started = {k.decode(): int(v) for k, v in (await app.redis.hgetall(starts)).items()}
    ended = {k.decode(): int(v) for k, v in (await app.redis.hgetall(ends)).items()}
    assert set(ended) == set(ids)
    started_twice = {j for j, c in started.items() if c > 1}
    ended_twice = {j for j, c in ended.items() if c > 1}
    assert max(started.values()) <= 2
    assert started_twice <= in_flight, "a job the dead worker did not hold was run again"
    assert ended_twice <= in_flight
    assert len(ended_twice) <= concurrency
    # the reruns were the second worker taking over the dead worker's lapsed leases
    assert started_twice, "nothing in flight was rerun: the kill did not interrupt any job"
    for jid in started_twice:
        info = await app.job(jid).info()
        assert info.attempts == 2
        assert f":{second.pid}:" in (info.worker or "")
    await assert_stream_empty(app)
    assert second.alive


# -- 2. fencing ---------------------------------------------------------------------------


@pytest.mark.slow
async def test_frozen_worker_cannot_overwrite_the_new_owners_result(
    app: App, workers: Spawn, tmp_path: Path
) -> None:
    """A worker frozen past its lease finishes its copy after a takeover but writes nothing."""
    vt = 1.5
    finished = tmp_path / "finished-by"
    frozen = workers(app.name, vt)
    await parked(app, frozen)
    job = await app.enqueue("whoami", 2.0, str(finished))
    await eventually(lambda: running_on(app, job.id, frozen), 10, "job running on first worker")

    async def sleeping() -> bool:  # "running" in Redis is not yet running in the process
        started = anyio.Path(f"{finished}.started")
        return await started.exists() and str(frozen.pid) in (await started.read_text()).split()

    await eventually(sleeping, 10, "the first worker's copy began")

    frozen.signal(signal.SIGSTOP)
    try:
        owner = workers(app.name, vt)
        assert await job.result(timeout=20) == owner.pid
    finally:
        frozen.signal(signal.SIGCONT)
    taken = await job.info()
    assert taken.attempts == 2
    assert f":{owner.pid}:" in (taken.worker or "")

    async def frozen_copy_done() -> bool:
        text = await anyio.Path(finished).read_text()
        return str(frozen.pid) in text.split()

    # the frozen copy runs to its end once resumed: its sleep is long over
    await eventually(frozen_copy_done, 10, "the frozen worker's copy finished")
    frozen.signal(signal.SIGTERM)  # flushes its buffered outcome before exiting
    assert await frozen.exited(15) == 0

    after = await job.info()
    assert after.status is JobStatus.SUCCEEDED
    assert after.result == owner.pid
    assert (after.finished_at, after.worker, after.attempts) == (
        taken.finished_at,
        taken.worker,
        taken.attempts,
    )
    assert "lost the lease" in frozen.output  # the completion script fenced it off
    assert (await anyio.Path(finished).read_text()).split() == [str(owner.pid), str(frozen.pid)]
    await assert_stream_empty(app)


# -- 3. poison ----------------------------------------------------------------------------


@pytest.mark.slow
async def test_job_that_kills_its_worker_is_poison_after_max_deliveries(
    app: App, workers: Spawn
) -> None:
    """A job that SIGKILLs every worker running it runs max_deliveries times, then dead-letters."""
    vt, max_deliveries = 1.0, 3
    job = await app.enqueue("suicide")
    spawned: list[WorkerProcess] = []

    async def finished() -> bool:
        if (await job.status()).finished:
            return True
        if not spawned or not spawned[-1].alive:  # the last worker died running it: next one
            spawned.append(workers(app.name, vt, max_deliveries=max_deliveries))
        return False

    await eventually(finished, 45, "the poison job finished", interval=0.05)
    runs = await app.redis.lrange(side_key(app.name, "runs"), 0, -1)
    assert len(runs) == max_deliveries
    assert [int(pid) for pid in runs] == [w.pid for w in spawned[:max_deliveries]]
    # every worker that ran it died by it; the one after them buried it and lives on
    assert len(spawned) == max_deliveries + 1
    for w in spawned[:-1]:
        assert await w.exited(5) == -signal.SIGKILL

    info = await job.info()
    assert info.status is JobStatus.FAILED
    assert "poison" in (info.error or "")
    assert info.exc_type == "PoisonJob"
    with pytest.raises(TaskFailed, match="poison"):
        await job.result(timeout=1)
    dead = [d for d in await dead_letters(app) if d.get("id") == job.id]
    assert len(dead) == 1
    assert "poison" in dead[0]["reason"]
    assert orjson.loads(dead[0]["fields"]) == ["id", job.id]  # the raw entry
    await assert_stream_empty(app)

    last = spawned[-1]
    ok = await app.enqueue("nap", 0.0)
    assert await ok.result(timeout=10) == last.pid
    last.signal(signal.SIGTERM)
    assert await last.exited(15) == 0


# -- 4. garbage in the stream -------------------------------------------------------------


async def test_garbage_in_the_stream_never_crashes_the_worker(app: App) -> None:
    """Foreign and malformed entries are dead-lettered, their jobs fail, the worker carries on."""

    @app.task
    async def echo(x: int) -> int:
        return x

    r, keys = app.redis, app.keys()

    async def record(jid: str | bytes, **fields: Any) -> None:
        """Write a job record as another program might (``None``: leave the field out)."""
        base = {"task": "echo", "queue": keys.queue, "args": "[1]", "kwargs": "{}",
                "status": "queued", "attempts": 0, "retries": 0, "timeout": ""}  # fmt: skip
        key = keys.job(jid) if isinstance(jid, str) else keys.job_prefix.encode() + jid
        values = {k: v for k, v in {**base, **fields}.items() if v is not None}
        await r.hset(key, mapping=values)

    # (label, raw entry fields, job id whose record must end failed or None, expected problem)
    cases: list[tuple[str, dict[str, Any], str | None, str]] = []

    def case(label: str, entry: dict[str, Any], jid: str | None, problem: str) -> None:
        cases.append((label, entry, jid, problem))

    case("no id field", {"foo": "bar"}, None, "malformed stream entry")
    case("empty id", {"id": ""}, None, "malformed stream entry")
    case("another library's entry", {"job_id": "x", "payload": b"\x80\x04"}, None, "malformed")
    await record("extra")
    case("extra foreign fields", {"id": "extra", "via": "elsewhere"}, "extra", "malformed")
    case("job record missing", {"id": "ghost"}, "ghost", "is missing")
    await record("notjson", args="[1, two]")
    case("args not JSON", {"id": "notjson"}, "notjson", "not JSON")
    await record("argsobj", args='{"x": 1}')
    case("args a JSON object", {"id": "argsobj"}, "argsobj", "'args' must be a JSON array")
    await record("kwargslist", kwargs="[1]")
    case("kwargs a JSON list", {"id": "kwargslist"}, "kwargslist", "must be a JSON object")
    await record("notask", task=None)
    case("no task field", {"id": "notask"}, "notask", "no 'task' field")
    await record("unknown", task="nobody.registered")
    case("unregistered task", {"id": "unknown"}, "unknown", "unknown task 'nobody.registered'")
    await record("badtimeout", timeout="soon")
    case("timeout not a number", {"id": "badtimeout"}, "badtimeout", "not numbers")
    await record("binarytask", task=b"\xff\xfeecho")
    case("task name not UTF-8", {"id": "binarytask"}, "binarytask", "not UTF-8")
    await record("badcounter", attempts="many")
    case("attempts not a number", {"id": "badcounter"}, "badcounter", "not an integer")
    await r.set(keys.job("wrongtype"), "a string, not a hash")
    case("job key not a hash", {"id": "wrongtype"}, None, "not a job record")
    await record(b"bin\xffid")
    case("job id not UTF-8", {"id": b"bin\xffid"}, None, "not UTF-8")

    worker = Worker(app, concurrency=10)
    async with worker:
        raw_ids: dict[str, bytes] = {}
        for i, (label, entry, _, _) in enumerate(cases):
            raw_ids[label] = await r.xadd(keys.stream, entry)
            # a normal job enqueued after the garbage still runs
            job = await echo.enqueue(i)
            assert await job.result(timeout=10) == i, label
        # every loop of the worker is still alive (a script error would have ended one)
        loops = [*worker._loops, *worker._fetchers]
        assert not [t.get_name() for t in loops if t.done()]
        await assert_stream_empty(app)

    dead = {d["entry"]: d for d in await dead_letters(app)}
    for label, _, jid, problem in cases:
        eid = raw_ids[label].decode()
        assert eid in dead, f"{label}: raw entry not dead-lettered"
        assert problem in dead[eid]["reason"], (label, dead[eid]["reason"])
        if jid is not None:
            info = await app.job(jid).info()
            assert info.status is JobStatus.FAILED, label
            assert problem in (info.error or ""), (label, info.error)
    assert len(dead) == len(cases)
    # a record under an id that is not UTF-8 is failed under its own (raw) key
    binary = await r.hmget(keys.job_prefix.encode() + b"bin\xffid", "status", "error")
    assert binary[0] == b"failed"
    assert b"not UTF-8" in binary[1]
    # a foreign key that is not a hash is left as it was
    assert await r.get(keys.job("wrongtype")) == b"a string, not a hash"


# -- 5. Redis restarted under a running worker ----------------------------------------------


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    """A private redis-server this test may kill and restart (never the session's)."""
    with EmbeddedRedis() as server:
        yield server


async def restart(server: EmbeddedRedis, down: float) -> None:
    """SIGKILL the redis-server, stay down a while, start a new one on the same socket."""
    assert server.proc is not None
    server.proc.kill()
    server.proc.wait()
    if server.proc.stderr is not None:
        server.proc.stderr.close()
    server.proc = None
    await anyio.sleep(down)
    server.start()


async def kill_all_clients(admin: Redis) -> int:
    """CLIENT KILL every connection but our own; how many were killed."""
    me = await admin.client_id()
    killed = 0
    for c in await admin.client_list():
        if int(c["id"]) != me:
            killed += await admin.client_kill_filter(_id=c["id"])
    return killed


@pytest.fixture
async def producer(own_redis: EmbeddedRedis, app: App) -> AsyncIterator[App]:
    """An app of the same name as ``app`` on the private Redis."""
    p = App(app.name, redis_url=own_redis.url)
    yield p
    await p.aclose()


@pytest.mark.slow
async def test_worker_and_producer_survive_redis_restart_and_killed_connections(
    own_redis: EmbeddedRedis, producer: App, workers: Spawn
) -> None:
    """After a Redis restart under a running job and CLIENT KILL of every connection, the
    worker reconnects and keeps its leases; producers and result waiters carry on."""
    vt = 1.5
    # concurrency 1: while a job runs the fetcher holds no slot and sends nothing, so after the
    # restart lease renewal and completion are the first to meet the empty (stream-less) Redis
    w = workers(producer.name, vt, "--concurrency", "1", url=own_redis.url)
    await parked(producer, w)
    before = await producer.enqueue("nap", 0.0)
    assert await before.result(timeout=10) == w.pid

    across = await producer.enqueue("nap", 2.0)
    await eventually(lambda: running_on(producer, across.id, w), 10, "job running")
    await restart(own_redis, down=0.5)  # every key is gone: job records, streams, groups, scripts
    await parked(producer, w, timeout=20)  # reconnected, group recreated, reading again

    # a job outliving its lease runs once: renewal survived the restart
    long = await producer.enqueue("nap", 2 * vt)
    assert await long.result(timeout=20) == w.pid
    assert len(await producer.redis.lrange(side_key(producer.name, f"runs:{long.id}"), 0, -1)) == 1
    assert (await long.info()).attempts == 1

    admin = Redis.from_url(own_redis.url)
    try:
        # kill everything while a job runs and a result() waits on the shared subscription
        running = await producer.enqueue("nap", 1.0)
        waiter = asyncio.ensure_future(running.result(timeout=20))
        await eventually(lambda: running_on(producer, running.id, w), 10, "job running")
        assert await kill_all_clients(admin) >= 3  # the worker's and the producer's
        assert await waiter == w.pid
        assert await kill_all_clients(admin) >= 1
        await parked(producer, w)
        last = await producer.enqueue("nap", 0.0)  # the producer's pool reconnects too
        assert await last.result(timeout=20) == w.pid
    finally:
        await admin.aclose()
    await assert_stream_empty(producer)
    assert "Task exception was never retrieved" not in w.output
    w.signal(signal.SIGTERM)
    assert await w.exited(15) == 0


# -- 6. SIGTERM -----------------------------------------------------------------------------


@pytest.mark.slow
async def test_sigterm_drains_in_grace_and_hands_back_the_rest_at_once(
    app: App, workers: Spawn
) -> None:
    """On SIGTERM short jobs finish, long ones go back to the stream at once, exit code 0."""
    vt, grace = 60.0, 1.5  # a long lease: a takeover by lease expiry would take a minute
    stopping = workers(app.name, vt, "--shutdown-timeout", str(grace))
    await parked(app, stopping)
    short = [await app.enqueue("nap", 0.5) for _ in range(4)]
    long = [await app.enqueue("nap", 30.0, first_attempt_only=True) for _ in range(3)]

    async def all_running() -> bool:
        return all([await running_on(app, j.id, stopping) for j in short + long])

    await eventually(all_running, 10, "every job running on the first worker")
    other = workers(app.name, vt)
    await parked(app, other)  # idle, parked in XREADGROUP: it gets handed-back jobs only

    stopping.signal(signal.SIGTERM)
    signalled = time.monotonic()
    assert await stopping.exited(grace + 10) == 0
    stopped = time.monotonic()
    assert stopped - signalled < grace + 4

    for j in short:  # finished within the grace period by the stopping worker
        assert await j.result(timeout=1) == stopping.pid
        assert (await j.info()).attempts == 1
    for j in long:  # handed back and finished by the other worker, long before vt
        assert await j.result(timeout=10) == other.pid
        info = await j.info()
        assert info.attempts == 2
        assert info.finished_at is not None
    assert time.monotonic() - stopped < 10 < vt
    await assert_stream_empty(app)


@pytest.mark.slow
async def test_shutdown_log_says_a_second_signal_skips_the_grace_period(
    app: App, workers: Spawn
) -> None:
    """The first Ctrl-C tells the user how long it waits and that a second one cuts it short;
    the second hands a long job back at once instead of waiting out the grace period."""
    vt, grace = 60.0, 30.0
    w = workers(app.name, vt, "--shutdown-timeout", str(grace), "--log-level", "info")
    await parked(app, w)
    job = await app.enqueue("nap", 30.0, first_attempt_only=True)
    await eventually(lambda: running_on(app, job.id, w), 10, "the job running")

    async def told() -> bool:
        return "again" in w.output

    w.signal(signal.SIGINT)
    await eventually(told, 10, "the stopping line")
    assert "up to 30s" in w.output
    assert "press Ctrl-C again (or send a second SIGTERM) to hand them back now" in w.output
    signalled = time.monotonic()
    w.signal(signal.SIGINT)
    assert await w.exited(15) == 0
    assert time.monotonic() - signalled < grace / 2
    assert "skipping the grace period" in w.output
    assert await app.job(job.id).status() is JobStatus.QUEUED  # handed back, not lost


# -- 7. streams stay bounded ---------------------------------------------------------------


async def test_finished_entries_are_deleted_from_the_stream(app: App) -> None:
    """After a mixed batch (successes, failures, retries) the stream and pending list are empty."""

    @app.task(retries=1, backoff=0.01)
    async def flaky(i: int) -> int:
        if i % 3 == 0 and current_job().attempt == 1:
            raise ValueError("first attempt fails")
        return i

    @app.task
    async def boom(i: int) -> None:
        raise RuntimeError(f"boom {i}")

    @app.task
    async def again(i: int) -> int:
        if current_job().attempt < 2:
            raise Retry(delay=0.05)
        return i

    ok = await app.enqueue_many([flaky.call(i) for i in range(200)])
    failing = await app.enqueue_many([boom.call(i) for i in range(50)])
    retried = await app.enqueue_many([again.call(i) for i in range(50)])
    async with Worker(app, concurrency=50):
        with anyio.fail_after(30):
            assert [await j.result() for j in ok] == list(range(200))
            assert [await j.result() for j in retried] == list(range(50))
            for j in failing:
                with pytest.raises(TaskFailed, match="boom"):
                    await j.result()
        await assert_stream_empty(app)  # while the worker still runs: nothing relies on stop
        assert await app.redis.zcard(app.keys().scheduled) == 0


# -- 8. leases are renewed ------------------------------------------------------------------


@pytest.mark.slow
async def test_long_jobs_keep_their_lease_and_run_exactly_once(app: App, workers: Spawn) -> None:
    """Jobs running 3x longer than the visibility timeout are never taken over by a 2nd worker."""
    vt = 1.5
    pair = [workers(app.name, vt), workers(app.name, vt)]
    for w in pair:
        await parked(app, w)
    jobs = [await app.enqueue("nap", 5.0) for _ in range(4)]
    pids = {w.pid for w in pair}
    with anyio.fail_after(20):
        for j in jobs:
            assert await j.result() in pids
    for j in jobs:
        runs = await app.redis.lrange(side_key(app.name, f"runs:{j.id}"), 0, -1)
        assert len(runs) == 1, f"job {j.id} ran {len(runs)} times"
        info = await j.info()
        assert info.attempts == 1
        assert info.result == int(runs[0])
    for w in pair:
        w.signal(signal.SIGTERM)
        assert await w.exited(15) == 0
        assert "took over" not in w.output
        assert "lapsed" not in w.output
    await assert_stream_empty(app)


# -- 9. stopping never hangs ------------------------------------------------------------------


async def test_stopping_outlasts_a_swallowed_cancellation() -> None:
    """A loop that loses one cancellation (asyncio.wait_for in redis-py, Python 3.11) still ends."""
    swallowed = []

    async def loop_like_promote() -> None:
        while True:
            try:
                await asyncio.sleep(0.01)  # stands for a Redis command
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed.append(True)  # what 3.11's wait_for does when its I/O just completed

    task = asyncio.get_running_loop().create_task(loop_like_promote())
    await asyncio.sleep(0.02)
    with anyio.fail_after(5):
        await cancel_and_wait([task])
    assert swallowed
    assert task.cancelled()
