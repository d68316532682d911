"""Producer side: typed, validated, idempotent enqueueing in one round trip."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from aioq import App, JobNotFound, JobStatus, RedisUnavailable
from aioq.connection import CONNECT_TIMEOUT

pytestmark = pytest.mark.anyio


async def _dump(app: App) -> dict[bytes, Any]:
    """Every key of the app with its type (the app's name isolates it)."""
    keys = [k async for k in app.redis.scan_iter(match=f"aioq:{{{app.name}:*")]
    return {k: await app.redis.type(k) for k in sorted(keys)}


async def test_enqueue_writes_one_record_and_one_entry(app: App) -> None:
    """One enqueue leaves one job hash and one stream entry, with the call's arguments."""

    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    job = await add.enqueue(2, y=3)
    info = await job.info()
    assert info.status is JobStatus.QUEUED
    assert (info.task, info.args, info.kwargs, info.attempts) == ("add", [2], {"y": 3}, 0)
    assert info.enqueued_at is not None
    assert await app.redis.xlen(app.keys().stream) == 1


async def test_same_job_id_returns_existing_job_and_writes_nothing(app: App) -> None:
    """Enqueueing an id that exists returns that job; the record and stream are untouched."""

    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    first = await add.options(job_id="order-42").enqueue(1, 2)
    before = await app.redis.hgetall(app.keys().job("order-42"))
    second = await add.options(job_id="order-42").enqueue(100, 200)
    assert first == second
    assert await app.redis.hgetall(app.keys().job("order-42")) == before
    assert await app.redis.xlen(app.keys().stream) == 1


async def test_retry_after_ambiguous_network_error_cannot_duplicate(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The script ran but its reply was lost: redis-py's retry resends it, nothing doubles."""

    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    await app.ping()
    original = AbstractConnection.read_response
    dropped = []

    async def lose_first_evalsha_reply(self: AbstractConnection, *a: Any, **kw: Any) -> Any:
        reply = await original(self, *a, **kw)
        if not dropped and reply == [1]:  # the enqueue script's "written" answer
            dropped.append(reply)
            raise RedisConnectionError("connection reset after the command ran")
        return reply

    monkeypatch.setattr(AbstractConnection, "read_response", lose_first_evalsha_reply)
    job = await add.options(job_id="ambiguous").enqueue(1, 2)
    monkeypatch.undo()
    assert dropped, "the reply was never dropped: the test did not exercise the retry"
    assert job.id == "ambiguous"
    assert await app.redis.xlen(app.keys().stream) == 1
    assert (await job.info()).args == [1, 2]


async def test_non_json_arguments_raise_type_error_before_writing(app: App) -> None:
    @app.task
    async def store(blob: object) -> None:
        return None

    with pytest.raises(TypeError, match=r"positional argument 0 of task 'store'.*JSON"):
        await store.enqueue(object())
    with pytest.raises(TypeError, match=r"argument 'blob' of task 'store'"):
        await store.enqueue(blob={1, 2})
    assert await _dump(app) == {}


async def test_arguments_that_do_not_fit_the_signature_are_rejected(app: App) -> None:
    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(TypeError, match=r"task 'add' called with bad arguments"):
        await add.enqueue(1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"task 'add'.*unexpected keyword argument 'z'"):
        await add.enqueue(1, 2, z=3)  # type: ignore[call-arg]
    assert await _dump(app) == {}


async def test_enqueue_many_pipelines_and_stays_idempotent(app: App) -> None:
    @app.task
    async def square(x: int) -> int:
        return x * x

    calls = [square.call(i) for i in range(500)]
    calls.append(square.options(job_id="fixed").call(1))
    calls.append(square.options(job_id="fixed").call(2))
    jobs = await app.enqueue_many(calls)
    assert len(jobs) == 502
    assert jobs[-1] == jobs[-2]
    assert await app.redis.xlen(app.keys().stream) == 501
    with pytest.raises(TypeError):
        await app.enqueue_many([square.call(1), square.call(object())])  # validated first
    assert await app.redis.xlen(app.keys().stream) == 501


async def test_enqueue_by_name_and_options(app: App) -> None:
    """Producers that do not import the task enqueue by name; queue= routes it."""
    job = await app.enqueue("reports.build", 2024, fmt="pdf")
    assert (await job.info()).task == "reports.build"
    other = await app.options("emails.send", queue="emails", job_id="e1").enqueue("a@b.c")
    assert other.queue == "emails"
    assert (await app.job("e1").info()).queue == "emails"  # found among known queues


async def test_job_handle_for_unknown_id(app: App) -> None:
    with pytest.raises(JobNotFound, match="nope"):
        await app.job("nope").status()


async def test_duplicate_task_name_raises(app: App) -> None:
    @app.task
    async def a() -> None: ...

    with pytest.raises(ValueError, match="already registered"):

        @app.task(name="a")
        async def b() -> None: ...


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retries": -1}, "retries must be >= 0"),
        ({"timeout": 0}, "timeout must be > 0"),
        ({"delay": -1}, "delay must not be negative"),
        ({"job_id": ""}, "job_id must be a non-empty string"),
        ({"queue": "a{b}"}, "queue name 'a{b}'"),
    ],
)
async def test_bad_options_name_the_value(app: App, options: dict[str, Any], message: str) -> None:
    @app.task
    async def noop() -> None: ...

    with pytest.raises(ValueError, match=message):
        await noop.options(**options).enqueue()
    assert await _dump(app) == {}


async def test_unreachable_redis_names_the_url(tmp_path: Any) -> None:
    url = f"unix://{tmp_path}/nothing-here.sock"
    app = App("unreachable", redis_url=url)

    @app.task
    async def noop() -> None: ...

    with pytest.raises(RedisUnavailable, match=r"nothing-here\.sock"):
        await noop.enqueue()
    await app.aclose()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://localhost:8080/0", "scheme 'http'"),
        ("sentinel://localhost:26379", "scheme 'sentinel'"),
        ("localhost:6379", "scheme 'localhost'"),
        ("redis:/localhost:6400", "two slashes"),
        ("redis://", "no host"),
        ("redis://localhost:abc/0", "port"),
        ("redis://localhost:6379/x", "non-negative integer, got 'x'"),
        ("redis://localhost:6379/-1", "non-negative integer, got '-1'"),
        ("redis://localhost:6379/0?db=two", "non-negative integer, got 'two'"),
        ("unix://tmp/redis.sock", "unix:///absolute/path"),
    ],
)
def test_a_url_that_is_not_a_redis_url_is_a_value_error_naming_it(url: str, message: str) -> None:
    """redis-py reads some of these as defaults (localhost:6379): aioq refuses them."""
    with pytest.raises(ValueError, match=message) as caught:
        App("urls", redis_url=url)
    assert f"redis_url {url!r}" in str(caught.value)


def test_the_url_error_hides_the_password_and_names_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIOQ_REDIS_URL", "http://admin:s3cret@cache:6379/0")
    with pytest.raises(ValueError, match="scheme 'http'") as caught:
        App("urls")
    assert str(caught.value).startswith("AIOQ_REDIS_URL 'http://admin:***@cache:6379/0'")
    assert "s3cret" not in str(caught.value)
    good = App("urls", redis_url="redis://:s3cret@cache:6379/3")
    assert "s3cret" not in repr(good)
    assert ":***@cache" in repr(good)


async def test_a_database_the_server_lacks_fails_naming_the_url_and_database(
    redis_url: str,
) -> None:
    app = App("nodb", redis_url=f"{redis_url}?db=99")
    with pytest.raises(ValueError, match=r"\?db=99'.*no database 99") as caught:
        await app.ping()
    assert isinstance(caught.value, RedisUnavailable)  # the CLI prints it as one line
    with pytest.raises(ValueError, match="no database 99"):
        await app.enqueue("anything")
    await app.aclose()


async def _not_redis(
    handler: Any,
) -> tuple[float, str]:
    """How long a ping of a loopback server run by ``handler`` takes to fail, and why."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    app = App("notredis", redis_url=f"redis://127.0.0.1:{port}/0")
    started = time.monotonic()
    try:
        with pytest.raises(RedisUnavailable) as caught:
            await app.ping()
        elapsed = time.monotonic() - started
        with pytest.raises(RedisUnavailable):
            await app.enqueue("anything")  # the command lane fails as fast
        assert time.monotonic() - started < 2 * elapsed + 1
    finally:
        await app.aclose()
        server.close()
        await server.wait_closed()
    assert f"redis://127.0.0.1:{port}/0" in str(caught.value)
    return elapsed, str(caught.value)


async def test_a_port_that_never_answers_fails_within_the_connect_timeout() -> None:
    """Before, every connect retry waited out the socket timeout: 37 s for a ping."""
    silent: list[asyncio.StreamWriter] = []

    async def accept_and_say_nothing(_: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        silent.append(w)

    elapsed, message = await _not_redis(accept_and_say_nothing)
    for w in silent:
        w.close()
    assert CONNECT_TIMEOUT - 0.5 < elapsed < CONNECT_TIMEOUT + 3, elapsed
    assert "no Redis reply within 5s" in message


async def test_a_port_that_answers_http_fails_at_once() -> None:
    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    elapsed, message = await _not_redis(http)
    assert elapsed < 2, elapsed
    assert "does not speak Redis" in message


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            datetime(2026, 1, 2, tzinfo=UTC),
            r"argument 'value' of task 'keep' is of type datetime\.datetime",
        ),
        (uuid.UUID(int=7), r"is of type uuid\.UUID"),
        (Decimal("1.5"), r"is of type decimal\.Decimal"),
        (float("nan"), r"is nan, which JSON cannot carry"),
        (float("inf"), r"is inf"),
        ({"when": [1, datetime(2026, 1, 2)]}, r"at \['when'\]\[1\] is of type datetime\.datetime"),
        ({1: "x"}, r"\(key 1\) is of type int"),
    ],
)
async def test_arguments_that_do_not_round_trip_are_rejected_before_writing(
    app: App, value: Any, message: str
) -> None:
    """orjson would send a datetime/UUID as a str and nan as null: the task would get another
    value than it was called with, so the enqueue refuses it."""

    @app.task
    async def keep(value: object) -> None: ...

    with pytest.raises(TypeError, match=message):
        await keep.enqueue(value=value)
    with pytest.raises(TypeError, match=r"positional argument 0 of task 'keep'"):
        await keep.enqueue(value)
    with pytest.raises(TypeError, match=r"positional argument 0 of task 'keep'"):
        await app.enqueue_many([keep.call(1), keep.call(value)])
    assert await _dump(app) == {}


async def test_json_values_round_trip_unchanged(app: App) -> None:
    @app.task
    async def keep(*args: object, **kwargs: object) -> None: ...

    values = ["s", 1, -2.5, True, None, [1, [2]], {"a": {"b": [None]}}]
    info = await (await keep.enqueue(*values, t=(1, 2), **{"k": 1e300})).info()
    assert info.args == values
    assert info.kwargs == {"t": [1, 2], "k": 1e300}


async def test_a_name_no_task_has_is_refused_naming_the_tasks(app: App) -> None:
    """Celery names tasks module.function; aioq's default is the bare function name."""

    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    @app.task
    async def send_email(to: str) -> None: ...

    message = (
        f"no task named 'tasks.add' on app {app.name!r} (its tasks: add, send_email); "
        "a task's default name is its function's __name__"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        await app.enqueue("tasks.add", 1, 2)
    with pytest.raises(ValueError, match=r"no task named 'tasks\.add'"):
        app.options("tasks.add", queue="emails")
    assert await _dump(app) == {}
    assert await (await app.enqueue("add", 1, 2)).info()
