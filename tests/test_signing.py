"""Signed jobs: ``App(signing_key=...)`` signs every job; a worker with a key runs only jobs
whose signature verifies, and fails the others ("bad signature") into the dead-letter stream."""

from __future__ import annotations

from typing import Any

import pytest

from aioq import App, JobStatus, TaskFailed, Worker
from aioq.views import dead_letters
from tests.conftest import unique_name

pytestmark = pytest.mark.anyio


def signed_app(url: str, key: Any, name: str | None = None) -> tuple[App, list[Any]]:
    """An app with a ``charge`` and a ``refund`` task that record the calls they get."""
    app = App(name or unique_name(), redis_url=url, signing_key=key)
    ran: list[Any] = []

    @app.task
    async def charge(user: str, cents: int) -> int:
        ran.append(("charge", user, cents))
        return cents

    @app.task
    async def refund(user: str, cents: int) -> int:
        ran.append(("refund", user, cents))
        return -cents

    return app, ran


async def drain(app: App) -> None:
    await Worker(app, concurrency=4, burst=True).run()


async def refused(app: App, job_id: str, why: str) -> None:
    """The job failed as BadSignature with ``why`` in its error and is in the dead letters."""
    job = app.job(job_id)
    with pytest.raises(TaskFailed, match="bad signature") as caught:
        await job.result(timeout=5)
    assert caught.value.exc_type == "BadSignature"
    assert why in str(caught.value)
    dead = await dead_letters(app)
    assert [d.job_id for d in dead] == [job_id]
    assert dead[0].reason.startswith("bad signature")


def test_signing_key_must_be_non_empty_bytes() -> None:
    """A key of the wrong type is a TypeError naming it; an empty key or list a ValueError."""
    with pytest.raises(TypeError, match=r"signing_key must be bytes, got str: pass signing_key"):
        App("a", signing_key="secret")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"signing_key must be bytes .* got int"):
        App("a", signing_key=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"signing_key\[1\] must be bytes, got str"):
        App("a", signing_key=[b"new", "old"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="signing_key must not be empty"):
        App("a", signing_key=b"")
    with pytest.raises(ValueError, match=r"signing_key\[0\] must not be empty"):
        App("a", signing_key=[b""])
    with pytest.raises(ValueError, match="not be an empty list"):
        App("a", signing_key=[])
    App("a", signing_key=bytearray(b"k"))  # any bytes-like value is a key


async def test_signed_jobs_run_and_carry_their_signature(redis_url: str) -> None:
    """Every enqueue path writes a signature (one call, many, by name, cron ticks are
    ``Call.prepare`` too), and the worker runs the signed jobs."""
    app, ran = signed_app(redis_url, b"secret")
    tasks = app.tasks
    one = await tasks["charge"].enqueue("ann", 5)
    many = await app.enqueue_many([tasks["charge"].call("bob", 6), tasks["refund"].call("cy", 7)])
    named = await app.enqueue("refund", "dee", 8)
    for job in [one, *many, named]:
        sig = await app.redis.hget(app.keys().job(job.id), "sig")
        assert sig is not None
        assert len(sig) == 64
    await drain(app)
    assert sorted(ran) == [("charge", "ann", 5), ("charge", "bob", 6), ("refund", "cy", 7),
                           ("refund", "dee", 8)]  # fmt: skip
    assert await named.result(timeout=5) == -8
    await app.aclose()


async def test_rewritten_arguments_never_run(redis_url: str) -> None:
    """Someone with write access to Redis rewrites a queued job's args, kwargs, task, retries
    or timeout: each job fails with "bad signature" and never runs."""
    app, ran = signed_app(redis_url, b"secret")
    charge = app.tasks["charge"]
    edits = {
        "args": b'["mallory", 1000000]',
        "kwargs": b'{"cents": 1000000}',
        "task": b"refund",
        "retries": b"50",
        "timeout": b"",
    }
    jobs = {}
    for field, value in edits.items():
        job = await charge.options(timeout=30).enqueue("ann", 5)
        await app.redis.hset(app.keys().job(job.id), field, value)
        jobs[field] = job
    await drain(app)
    assert ran == []
    for job in jobs.values():
        with pytest.raises(TaskFailed, match="bad signature") as caught:
            await job.result(timeout=5)
        assert caught.value.exc_type == "BadSignature"
        assert "changed after it was signed" in str(caught.value)
    dead = await dead_letters(app)
    assert sorted(d.job_id or "" for d in dead) == sorted(j.id for j in jobs.values())
    await app.aclose()


async def test_unsigned_job_never_runs(redis_url: str) -> None:
    """A producer without the key (or another program) writes a job: refused as unsigned."""
    name = unique_name()
    app, ran = signed_app(redis_url, b"secret", name)
    producer = App(name, redis_url=redis_url)  # same app, no key
    job = await producer.enqueue("charge", "ann", 5)
    assert await app.redis.hget(app.keys().job(job.id), "sig") is None
    await drain(app)
    assert ran == []
    await refused(app, job.id, "the job is unsigned")
    await producer.aclose()
    await app.aclose()


async def test_a_signed_record_copied_under_another_id_or_queue_never_runs(redis_url: str) -> None:
    """The signature binds the job id and the queue: a signed record replayed as a new job
    (copied to a new id), or moved into another queue, does not verify."""
    app, ran = signed_app(redis_url, b"secret")
    job = await app.tasks["charge"].enqueue("ann", 5)
    await drain(app)
    assert ran == [("charge", "ann", 5)]
    ran.clear()
    record = await app.redis.hgetall(app.keys().job(job.id))
    for k in (b"status", b"attempts"):
        record[k] = b"queued" if k == b"status" else b"0"
    for k in (b"started_at", b"finished_at", b"worker", b"result", b"deliveries"):
        record.pop(k, None)
    for queue, copy_id in (("default", "replayed"), ("other", job.id)):
        keys = app.keys(queue)
        await app.redis.hset(keys.job(copy_id), mapping=record)
        await app.redis.xadd(keys.stream, {"id": copy_id})
    await Worker(app, queues=["default", "other"], burst=True).run()
    assert ran == []
    for queue, copy_id in (("default", "replayed"), ("other", job.id)):
        info = await app.job(copy_id, queue).info()
        assert info.status is JobStatus.FAILED
        assert info.exc_type == "BadSignature"
    await app.aclose()


async def test_key_rotation_first_signs_every_key_verifies(redis_url: str) -> None:
    """Rotation: jobs signed with the old key still run on workers holding [new, old]; those
    workers sign with the new key; a worker that dropped the old key refuses the old jobs."""
    name = unique_name()
    old_producer, _ = signed_app(redis_url, b"old", name)
    rotated, ran = signed_app(redis_url, [b"new", b"old"], name)
    new_only, ran_new = signed_app(redis_url, [b"new"], name)
    before = await old_producer.tasks["charge"].enqueue("ann", 5)
    after = await rotated.tasks["charge"].enqueue("bob", 6)
    await drain(rotated)
    assert sorted(ran) == [("charge", "ann", 5), ("charge", "bob", 6)]

    late_old = await old_producer.tasks["charge"].enqueue("cy", 7)
    late_new = await rotated.tasks["refund"].enqueue("dee", 8)
    await drain(new_only)
    assert ran_new == [("refund", "dee", 8)]  # signed with "new" by the rotated app
    await refused(new_only, late_old.id, "signed with a key this worker lacks")
    assert await after.result(timeout=5) == 6
    assert await before.result(timeout=5) == 5
    assert await late_new.result(timeout=5) == -8
    for a in (old_producer, rotated, new_only):
        await a.aclose()


async def test_worker_without_a_key_runs_signed_jobs(redis_url: str) -> None:
    """Verification is the worker's choice: one without a key runs signed jobs as before."""
    name = unique_name()
    producer, _ = signed_app(redis_url, b"secret", name)
    worker_app, ran = signed_app(redis_url, None, name)
    job = await producer.tasks["charge"].enqueue("ann", 5)
    await drain(worker_app)
    assert ran == [("charge", "ann", 5)]
    assert await job.result(timeout=5) == 5
    await producer.aclose()
    await worker_app.aclose()


@pytest.mark.parametrize("key", [b"k", b"x" * 64, b"long key " * 20, bytes(range(256))])
def test_the_signature_is_hmac_sha256(key: bytes) -> None:
    """Signer's HMAC (two keyed SHA-256 states, copied per job) is the stdlib's HMAC-SHA256,
    for keys shorter than, as long as and longer than SHA-256's block."""
    import hmac

    from aioq.signing import Signer, job_message

    message = job_message("shop", "default", b"id-1", b"charge", b'["ann",5]', b"{}", b"0", b"")
    want = hmac.new(key, message, "sha256").hexdigest().encode()
    assert Signer((key,)).sign(message) == want
    assert Signer((b"other", key)).verify(message, want) is None


def test_signing_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """AIOQ_SIGNING_KEY: text, UTF-8 encoded; comma-separated keys rotate (the first signs)."""
    from aioq.signing import job_message

    message = job_message("a", "default", b"id", b"t", b"[]", b"{}", b"0", b"")
    monkeypatch.setenv("AIOQ_SIGNING_KEY", "new, old")
    rotated = App.from_env(name="a")
    assert rotated._signer is not None
    old_sig = App("a", signing_key=b"old")._signer.sign(message)  # type: ignore[union-attr]
    assert rotated._signer.verify(message, old_sig) is None
    assert rotated._signer.sign(message) == App("a", signing_key=b"new")._signer.sign(message)  # type: ignore[union-attr]
    monkeypatch.setenv("AIOQ_SIGNING_KEY", "new,,old")
    with pytest.raises(ValueError, match="AIOQ_SIGNING_KEY: an empty key"):
        App.from_env(name="a")


async def test_workflows_run_signed_and_a_smuggled_input_does_not(redis_url: str) -> None:
    """Every workflow step is encoded (and signed) by Call.prepare, piped steps as such: a
    signed chain, chord, group and callbacks run; an ``input`` (the value a piped step gets
    from its predecessor) added to a job that is not piped makes it fail unrun."""
    from aioq import chain, chord, group

    app, ran = signed_app(redis_url, b"secret")
    charge = app.tasks["charge"]

    @app.task
    async def plus(x: int, y: int) -> int:
        return x + y

    @app.task
    async def total(xs: list[int]) -> int:
        return sum(xs)

    @app.task
    async def boom() -> None:
        raise ValueError("no")

    @app.task
    async def noted(job_id: str) -> str:
        return f"failed: {job_id}"

    async with Worker(app, concurrency=8):
        c = await chain(plus.s(1, 2), plus.s(10), plus.s(100)).enqueue()
        assert await c.result(timeout=10) == 113
        ch = await chord([plus.s(i, i) for i in range(4)], total.s()).enqueue()
        assert await ch.result(timeout=10) == 12
        g = await group(plus.s(1, 1), plus.s(2, 2)).enqueue()
        assert await g.results(timeout=10) == [2, 4]
        failing = await boom.options(on_failure=noted.s()).enqueue()
        with pytest.raises(TaskFailed):
            await failing.result(timeout=10)
        follow = await eventually_callback(app, failing.id)
        assert follow == f"failed: {failing.id}"
        assert await dead_letters(app) == []
    smuggled = await charge.enqueue("ann", 5)
    await app.redis.hset(app.keys().job(smuggled.id), "input", b'"mallory"')
    await drain(app)
    assert ran == []
    await refused(app, smuggled.id, "changed after it was signed")
    await app.aclose()


async def eventually_callback(app: App, failed_id: str) -> Any:
    """The on_failure callback's result (the only job of task ``noted``)."""
    from aioq.views import list_jobs
    from tests.helpers import eventually

    async def found() -> Any:
        rows = await list_jobs(app, status=JobStatus.SUCCEEDED, task="noted")
        dead = await dead_letters(app)
        assert dead == [], [d.reason for d in dead]
        return rows and await app.job(rows[0].id).result(timeout=1)

    return await eventually(found, 10, f"the on_failure callback of {failed_id}")
