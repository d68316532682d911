"""ACL users: the producer and worker users docs/deploying.md gives (its very lines, app name
and password put in) run every essential of an app, Redis logs no refusal, and another app's
users are refused this app's jobs with a message naming what and why."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from aioq import (
    App,
    JobCancelled,
    JobStatus,
    PermissionDenied,
    QueueFull,
    TaskFailed,
    Worker,
    acl,
    chain,
    chord,
    group,
)
from tests.apps.secure import make_app
from tests.conftest import unique_name
from tests.helpers import ROOT, Spawned, eventually, processes_parked
from tests.servers import RedisProcess, redis_process

pytestmark = pytest.mark.anyio


def readme_lines() -> list[str]:
    """The ``ACL SETUSER`` lines of the docs' "ACL users" section, for app "shop"."""
    text = (ROOT / "docs" / "deploying.md").read_text()
    section = text[text.index("### ACL users") : text.index("### Signed jobs")]
    return [line for line in section.splitlines() if line.startswith("ACL SETUSER ")]


class Users:
    """An app's producer and worker users on a server, created from the docs' lines."""

    def __init__(self, server: RedisProcess, admin: redis.Redis, app: str) -> None:
        self.server, self.app = server, app
        self.password = secrets.token_hex(8)
        for line in readme_lines():
            mine = line.replace("shop", app).replace("CHANGE-ME", self.password)
            admin.execute_command(*mine.split())

    def url(self, role: str) -> str:
        return self.server.url(f"{self.app}-{role}", self.password)


@pytest.fixture(scope="module")
def server() -> Iterator[RedisProcess]:
    with redis_process() as s:
        yield s


@pytest.fixture
def admin(server: RedisProcess) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(server.url())
    r.acl_log_reset()
    yield r
    r.close()


def refusals(admin: redis.Redis, *users: Users) -> list[Any]:
    names = {f"{u.app}-{role}" for u in users for role in ("producer", "worker")}
    return [e for e in admin.acl_log() if e.get("username") in names]


def test_readme_lines_are_what_acl_setuser_writes() -> None:
    """The docs' lines are aioq.acl's, for app "shop", so the two cannot drift."""
    assert readme_lines() == [
        acl.setuser("shop", role, f"shop-{role}", "CHANGE-ME") for role in ("producer", "worker")
    ]


async def test_producer_and_worker_users_run_the_essentials(
    server: RedisProcess, admin: redis.Redis
) -> None:
    """As the docs' users: enqueue (async, bulk, by name, sync), results, a retry, a delay,
    cancel of a running job, progress, a cron tick, a rate limit, an unknown task buried in
    the dead letters. Redis logged no refusal (not even one a script swallowed)."""
    name = unique_name()
    users = Users(server, admin, name)
    producer = make_app(name, users.url("producer"))
    worker_app = make_app(name, users.url("worker"), cron=True)
    t = producer.tasks
    async with Worker(worker_app, concurrency=10):
        assert await (await t["add"].enqueue(2, 3)).result(timeout=10) == 5
        many = await producer.enqueue_many([t["add"].call(i, 1) for i in range(5)])
        assert [await j.result(timeout=10) for j in many] == [1, 2, 3, 4, 5]
        assert await (await t["send"].enqueue("retry@x")).result(timeout=10) == "sent to retry@x"
        delayed = await t["add"].options(delay=0.3).enqueue(1, 1)
        assert await delayed.status() is JobStatus.SCHEDULED
        assert await delayed.result(timeout=10) == 2
        limited = [await t["limited"].enqueue(i) for i in range(8)]  # 5/s: some wait
        assert [await j.result(timeout=10) for j in limited] == list(range(8))
        steps = await t["steps"].enqueue(5)
        seen = [p async for p in steps.progress()]
        assert seen[-1] == 5
        napping = await t["nap"].enqueue(30)
        await eventually(lambda: _is(napping, JobStatus.RUNNING), 10, "nap running")
        assert await napping.cancel() is True
        with pytest.raises(JobCancelled):
            await napping.result(timeout=10)
        stranger = App(name, redis_url=users.url("producer"))  # knows no tasks: by name
        unknown = await stranger.enqueue("no.such.task")
        with pytest.raises(TaskFailed, match=r"unknown task 'no\.such\.task'"):
            await unknown.result(timeout=10)
        flow = await chain(t["add"].s(1, 2), t["add"].s(10)).enqueue()
        assert await flow.result(timeout=10) == 13
        joined = await chord([t["add"].s(i, i) for i in range(3)], t["add"].s(100)).enqueue()
        with pytest.raises(TaskFailed):  # add([0, 2, 4], 100): the callback gets the list
            await joined.result(timeout=10)
        g = await group(t["add"].s(1, 1), t["add"].s(2, 2)).enqueue()
        assert await g.results(timeout=10) == [2, 4]
        first = t["nap"].options(job_id=f"{name}-nap").si(30)
        held = await chain(first, t["add"].s(1)).enqueue()  # the 2nd step is held
        nap = producer.job(f"{name}-nap")
        await eventually(lambda: _is(nap, JobStatus.RUNNING), 10, "the chain's nap running")
        assert await nap.cancel() is True  # cancels the held step too (FLOW)
        with pytest.raises((JobCancelled, TaskFailed)):
            await held.result(timeout=10)
        sync_job = await asyncio.to_thread(t["add"].enqueue_sync, 20, 22)
        assert await asyncio.to_thread(sync_job.result, 10) == 42
        assert (await asyncio.to_thread(sync_job.info)).attempts == 1
        await eventually(lambda: _cron_ran(worker_app), 10, "a cron tick's job")
        await stranger.aclose()
    assert refusals(admin, users) == []
    producer.close()
    for a in (producer, worker_app):
        await a.aclose()


async def test_flow_control_runs_as_the_readme_users(
    server: RedisProcess, admin: redis.Redis
) -> None:
    """As the docs' users: unique and debounced enqueues, a full queue refused and then
    waited on until a job finished, and a broadcast (the producer reads the heartbeats, the
    workers hand copies over and take them). Redis logged no refusal."""
    name = unique_name()
    users = Users(server, admin, name)
    limits = {"queue_limits": {"default": 2}}
    producer = App(name, redis_url=users.url("producer"), **limits)  # type: ignore[arg-type]
    worker_app = App(name, redis_url=users.url("worker"), **limits)  # type: ignore[arg-type]
    add, ping = _flow_tasks(producer)
    _flow_tasks(worker_app)
    first = await add.options(unique_for=5).enqueue(1, 2)
    assert (await add.options(unique_for=5).enqueue(1, 2)).id == first.id
    bounced = await add.options(debounce=0.2, unique_key="k").enqueue(1, 1)
    assert (await add.options(debounce=0.2, unique_key="k").enqueue(2, 2)).id == bounced.id
    with pytest.raises(QueueFull):  # the unique job and the debounced one fill it
        await add.enqueue(0, 0)
    waiter = asyncio.ensure_future(add.options(wait_if_full=10).enqueue(3, 3))
    async with Worker(worker_app, concurrency=2) as w1, Worker(worker_app, concurrency=1) as w2:
        assert await (await waiter).result(timeout=10) == 6
        assert await first.result(timeout=10) == 3
        assert await bounced.result(timeout=10) == 4
        await eventually(lambda: _beating(producer, 2), 10, "both workers beating")
        job = await ping.enqueue()
        assert await job.result(timeout=10) == {w1.consumer: "pong", w2.consumer: "pong"}
    assert refusals(admin, users) == []
    for a in (producer, worker_app):
        await a.aclose()


def _flow_tasks(app: App) -> tuple[Any, Any]:
    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    @app.task(broadcast=True, queue="fanout")
    async def ping() -> str:
        return "pong"

    return add, ping


async def _beating(app: App, n: int) -> bool:
    from aioq.views import worker_stats

    return len(await worker_stats(app)) >= n


async def _is(job: Any, status: JobStatus) -> bool:
    return await job.status() is status  # type: ignore[no-any-return]


async def _cron_ran(app: App) -> bool:
    keys = app.keys()
    return bool(await app.redis.exists(keys.cron_ran(app.crons[0].name)))


async def test_cli_workers_reclaim_and_hand_back_as_the_worker_user(
    server: RedisProcess, admin: redis.Redis
) -> None:
    """`aioq worker` subprocesses as the worker user: one SIGKILLed mid-job has its jobs
    reclaimed by another (XAUTOCLAIM), which hands them back at once on SIGTERM (release),
    and a third finishes them; no refusal logged."""
    name = unique_name()
    users = Users(server, admin, name)
    producer = make_app(name, users.url("producer"))
    env = {"AIOQ_APP_NAME": name}
    spawned = Spawned()
    try:
        first = spawned.start("tests.apps.secure:app", users.url("worker"), env)
        jobs = [await producer.tasks["nap"].enqueue(1.5) for _ in range(3)]
        await eventually(lambda: _all(jobs, JobStatus.RUNNING), 15, "naps running")
        os.killpg(first.pid, signal.SIGKILL)
        second = spawned.start("tests.apps.secure:app", users.url("worker"), env,
                               "--shutdown-timeout", "0.1")  # fmt: skip
        # the dead worker's leases lapse after visibility_timeout (5 s): the second takes over
        await eventually(lambda: _started_by_another(jobs, second), 20, "jobs reclaimed")
        second.signal(signal.SIGTERM)
        assert await second.exited(20) == 0
        third = spawned.start("tests.apps.secure:app", users.url("worker"), env)
        assert [await j.result(timeout=20) for j in jobs] == [1.5, 1.5, 1.5]
        assert [(await j.info()).attempts for j in jobs] == [3, 3, 3]
        watcher = App(name, redis_url=server.url())
        await processes_parked(watcher, third)
        await watcher.aclose()
    finally:
        spawned.close()
    assert refusals(admin, users) == []
    await producer.aclose()


async def _all(jobs: list[Any], status: JobStatus) -> bool:
    return all([await _is(j, status) for j in jobs])


async def _started_by_another(jobs: list[Any], worker: Any) -> bool:
    infos = [await j.info() for j in jobs]
    return all(i.attempts == 2 and i.status is JobStatus.RUNNING for i in infos)


async def test_another_apps_users_cannot_read_or_change_this_apps_jobs(
    server: RedisProcess, admin: redis.Redis
) -> None:
    """Users of app B, pointed at app A's queues: every call is PermissionDenied naming the
    user, what was refused and the keys; raw commands on A's keys are NOPERM; a producer user
    cannot run a worker; `aioq worker` as B prints one line and exits 2."""
    a_name, b_name = unique_name("a"), unique_name("b")
    a, b = Users(server, admin, a_name), Users(server, admin, b_name)
    owner = make_app(a_name, a.url("producer"))
    job = await owner.tasks["add"].enqueue(1, 2)
    intruder = make_app(a_name, b.url("producer"))
    theirs = intruder.job(job.id, "default")
    user = re.escape(f"Redis user '{b_name}-producer' may not")
    tag = re.escape(f"aioq:{{{a_name}:default}}")
    attempts: list[tuple[str, Any]] = [
        (rf"{user} run aioq's ENQUEUE script \(EVALSHA\) on the keys {tag}:\*",
         lambda: intruder.tasks["add"].enqueue(6, 6)),
        (rf"{user} read job .*HGET {tag}:job:", theirs.status),
        (rf"{user} read job .*HGETALL {tag}:job:", theirs.info),
        (rf"{user} read job .*HGET {tag}:job:", theirs.cancel),
        (rf"{user} wait for job .*SUBSCRIBE {tag}:done:", lambda: theirs.result(timeout=2)),
    ]  # fmt: skip
    for pattern, attempt in attempts:
        with pytest.raises(PermissionDenied, match=pattern) as caught:
            await attempt()
        assert f"needs ~aioq:{{{a_name}:*}}:*" in str(caught.value)
        assert caught.value.user == f"{b_name}-producer"
    with pytest.raises(PermissionDenied, match=rf"{user} run aioq's ENQUEUE script"):
        await asyncio.to_thread(intruder.tasks["add"].enqueue_sync, 1, 1)
    with pytest.raises(PermissionDenied, match=rf"{user} read job"):
        await asyncio.to_thread(intruder.job_sync(job.id, "default").status)

    raw = redis.Redis.from_url(b.url("worker"))
    key = owner.keys().job(job.id)
    stream = owner.keys().stream
    for command in (("HGETALL", key), ("HSET", key, "args", "[6, 6]"), ("DEL", key),
                    ("XRANGE", stream, "-", "+"), ("KEYS", "*"), ("FLUSHALL",)):  # fmt: skip
        with pytest.raises(redis.exceptions.NoPermissionError):
            raw.execute_command(*command)
    raw.close()
    other_worker, producer_worker = (
        make_app(a_name, b.url("worker")),
        make_app(a_name, a.url("producer")),
    )
    with pytest.raises(PermissionDenied, match=re.escape(f"Redis user '{b_name}-worker' may not")):
        await Worker(other_worker, burst=True).run()
    with pytest.raises(PermissionDenied, match=r"create the consumer groups \(XGROUP CREATE\)"):
        await Worker(producer_worker, burst=True).run()  # a producer user is not a worker

    cli = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "aioq", "worker", "tests.apps.secure:app", "--burst"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT), "AIOQ_APP_NAME": a_name,
             "AIOQ_REDIS_URL": b.url("worker")},
    )  # fmt: skip
    assert cli.returncode == 2
    assert cli.stderr.count("\n") == 1, cli.stderr
    assert f"Redis user '{b_name}-worker' may not" in cli.stderr
    assert await owner.job(job.id).status() is JobStatus.QUEUED  # untouched
    for x in (owner, intruder, other_worker, producer_worker):
        x.close()
        await x.aclose()


async def test_a_refused_subscription_fails_its_own_waiter_only(
    server: RedisProcess, admin: redis.Redis
) -> None:
    """A user allowed some jobs' done channels only: result() of another job raises
    PermissionDenied at once (a refused SUBSCRIBE used to end the shared subscription, and
    every result() hung past its timeout), while waits on allowed channels, at the same time
    and after, still get their results over the same subscription."""
    name = unique_name()
    user = f"{name}-narrow"
    admin.execute_command("ACL", "SETUSER", user, "reset", "on", ">pw", "~*", "+@all",
                          f"&aioq:{{{name}:default}}:done:ok-*")  # fmt: skip
    app = make_app(name, server.url(user, "pw"))
    worker_app = make_app(name, server.url())
    async with Worker(worker_app):
        add = app.tasks["add"]
        refused = await add.options(job_id="no-1").enqueue(1, 1)
        allowed = [await add.options(job_id=f"ok-{i}").enqueue(i, i) for i in range(3)]
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        outcomes = await asyncio.gather(
            refused.result(timeout=10), *(j.result(timeout=10) for j in allowed),
            return_exceptions=True,
        )  # fmt: skip
        assert loop.time() - t0 < 5
        assert isinstance(outcomes[0], PermissionDenied)
        assert "SUBSCRIBE aioq:" in str(outcomes[0])
        assert outcomes[1:] == [0, 2, 4]
        later = await add.options(job_id="ok-later").enqueue(5, 5)
        assert await later.result(timeout=10) == 10
    for a in (app, worker_app):
        await a.aclose()
