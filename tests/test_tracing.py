"""OpenTelemetry tracing (``aioq/tracing.py``): the enqueuer's trace context travels in the job
and the worker's span of each attempt is its child, checked with the SDK's in-memory exporter
against the real Redis; and with no provider, or no OpenTelemetry at all, nothing is written.

The global tracer provider can be set once per process: a module fixture sets it through the
public API and, when the module is done, puts the API back in its unset state (as
opentelemetry-test-utils' ``reset_trace_globals`` does), so later test modules run untraced.
Each test finds its own spans by trace or job id: tests do not depend on one another.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util._once import Once

from aioq import App, JobCancelled, TaskFailed, Worker, current_job

from .conftest import unique_name
from .helpers import ROOT

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def otel() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    assert trace._TRACER_PROVIDER is None, "another module left a tracer provider set"
    provider, exporter = TracerProvider(), InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    yield provider, exporter
    provider.shutdown()
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


@pytest.fixture
def exporter(otel: tuple[TracerProvider, InMemorySpanExporter]) -> InMemorySpanExporter:
    otel[1].clear()
    return otel[1]


@pytest.fixture
def tracer(otel: tuple[TracerProvider, InMemorySpanExporter]) -> trace.Tracer:
    return otel[0].get_tracer("tests")


def only(spans: list[ReadableSpan], name: str, job_id: str | None = None) -> ReadableSpan:
    found = [
        s
        for s in spans
        if s.name == name
        and (job_id is None or (s.attributes or {}).get("messaging.message.id") == job_id)
    ]
    assert len(found) == 1, f"{len(found)} spans named {name!r} among {[s.name for s in spans]}"
    return found[0]


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def ids(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


async def test_worker_span_is_a_child_of_the_publish_span_of_the_request(
    app: App, tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    """request -> "add publish" (PRODUCER) -> "add process" (CONSUMER), one trace id; the
    process span is current while the task runs, so the task's own spans are its children."""

    @app.task
    async def add(x: int, y: int) -> int:
        with tracer.start_as_current_span("inside"):
            return x + y

    with tracer.start_as_current_span("request") as request:
        job = await add.enqueue(2, 3)
    carried = await app.redis.hget(app.keys().job(job.id), "trace")
    assert carried is not None
    async with Worker(app):
        assert await job.result(timeout=10) == 5

    spans = list(exporter.get_finished_spans())
    publish = only(spans, "add publish")
    process = only(spans, "add process")
    inside = only(spans, "inside")
    trace_id, request_id = request.get_span_context().trace_id, request.get_span_context().span_id
    assert {ids(s)[0] for s in (publish, process, inside)} == {trace_id}
    assert parent_id(publish) == request_id
    assert parent_id(process) == ids(publish)[1]
    assert parent_id(inside) == ids(process)[1]
    assert process.parent is not None
    assert process.parent.is_remote
    assert f"{trace_id:032x}-{ids(publish)[1]:016x}" in orjson.loads(carried)["traceparent"]

    assert publish.kind is SpanKind.PRODUCER
    assert dict(publish.attributes or {}) == {
        "messaging.system": "aioq",
        "messaging.destination.name": "default",
        "messaging.message.id": job.id,
        "messaging.operation": "publish",
        "messaging.operation.type": "send",
        "aioq.task": "add",
    }
    assert process.kind is SpanKind.CONSUMER
    attributes = dict(process.attributes or {})
    assert str(attributes.pop("messaging.client.id")).count(":") == 2  # the worker's name
    assert attributes == {
        "messaging.system": "aioq",
        "messaging.destination.name": "default",
        "messaging.message.id": job.id,
        "messaging.operation": "process",
        "messaging.operation.type": "process",
        "aioq.task": "add",
        "aioq.job.attempt": 1,
        "aioq.job.outcome": "succeeded",
    }
    assert process.status.status_code is StatusCode.UNSET
    assert publish.end_time is not None
    assert process.start_time is not None
    assert publish.end_time <= process.start_time


async def test_failed_attempts_have_error_status_and_the_exception(
    app: App, tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    """Each attempt has its own process span, all children of the one publish span; a failed
    one has status ERROR and an "exception" event with the remote type, message and trace."""

    @app.task(retries=1, backoff=0.0)
    async def explode() -> None:
        raise ValueError(f"boom {current_job().attempt}")

    with tracer.start_as_current_span("request"):
        job = await explode.enqueue()
    async with Worker(app):
        with pytest.raises(TaskFailed):
            await job.result(timeout=10)

    spans = list(exporter.get_finished_spans())
    publish = only(spans, "explode publish")
    attempts = sorted(
        (s for s in spans if s.name == "explode process"),
        key=lambda s: str((s.attributes or {})["aioq.job.attempt"]),
    )
    assert len(attempts) == 2
    for n, (span, outcome) in enumerate(zip(attempts, ["retried", "failed"], strict=True), 1):
        assert parent_id(span) == ids(publish)[1]
        assert (span.attributes or {})["aioq.job.attempt"] == n
        assert (span.attributes or {})["aioq.job.outcome"] == outcome
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == f"ValueError: boom {n}"
        [event] = span.events
        assert event.name == "exception"
        attributes = dict(event.attributes or {})
        assert attributes["exception.type"] == "ValueError"
        assert attributes["exception.message"] == f"boom {n}"
        assert "raise ValueError" in str(attributes["exception.stacktrace"])


async def test_timed_out_cancelled_and_interrupted_attempts_end_their_spans(
    app: App, tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    """A span ends with its attempt however it ends: a timeout (ERROR, TimeoutError), a
    job.cancel() (outcome "cancelled"), or the worker stopping under it ("interrupted")."""
    started = asyncio.Event()

    @app.task(timeout=0.05)
    async def slow() -> None:
        await asyncio.sleep(5)

    @app.task
    async def long(n: int) -> None:
        started.set()
        await asyncio.sleep(30)

    jobs = await app.enqueue_many([slow.call(), long.call(1)])
    async with Worker(app, shutdown_timeout=0.1):
        with pytest.raises(TaskFailed):
            await jobs[0].result(timeout=10)
        await asyncio.wait_for(started.wait(), 10)
        assert await jobs[1].cancel() is True
        with pytest.raises(JobCancelled):
            await jobs[1].result(timeout=10)
        started.clear()
        stopped = await long.enqueue(2)
        await asyncio.wait_for(started.wait(), 10)
    # the worker stopped with `stopped` running: it was interrupted (and handed back)

    spans = list(exporter.get_finished_spans())
    timed_out = only(spans, "slow process")
    assert timed_out.status.status_code is StatusCode.ERROR
    assert (timed_out.attributes or {})["aioq.job.outcome"] == "failed"
    assert (timed_out.events[0].attributes or {})["exception.type"] == "TimeoutError"
    cancelled = only(spans, "long process", jobs[1].id)
    assert (cancelled.attributes or {})["aioq.job.outcome"] == "cancelled"
    assert cancelled.status.status_code is StatusCode.UNSET
    interrupted = only(spans, "long process", stopped.id)
    assert (interrupted.attributes or {})["aioq.job.outcome"] == "interrupted"
    for span, job_id in (
        (timed_out, jobs[0].id),
        (cancelled, jobs[1].id),
        (interrupted, stopped.id),
    ):
        task = span.name.split()[0]
        assert parent_id(span) == ids(only(spans, f"{task} publish", job_id))[1]


async def test_enqueue_with_no_active_span_starts_a_trace(
    app: App, tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    """With a provider but no active span, the publish span is the root of a new trace and the
    process span still its child."""

    @app.task
    async def ping() -> str:
        return "pong"

    job = await ping.enqueue()
    async with Worker(app):
        assert await job.result(timeout=10) == "pong"
    spans = list(exporter.get_finished_spans())
    publish, process = only(spans, "ping publish"), only(spans, "ping process")
    assert publish.parent is None
    assert parent_id(process) == ids(publish)[1]
    assert ids(process)[0] == ids(publish)[0]


async def test_enqueue_many_carries_each_jobs_own_context(
    app: App, tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    """enqueue_many makes one publish span per job (across queues, in one round trip), and
    each job's process span is the child of its own."""

    @app.task
    async def double(x: int) -> int:
        return 2 * x

    @app.task(queue="other")
    async def triple(x: int) -> int:
        return 3 * x

    with tracer.start_as_current_span("request") as request:
        jobs = await app.enqueue_many(
            [double.call(1), triple.call(2), double.options(priority=5).call(3)]
        )
    async with Worker(app):
        assert [await j.result(timeout=10) for j in jobs] == [2, 6, 6]

    spans = list(exporter.get_finished_spans())
    request_id = request.get_span_context().span_id
    for job, task, queue in zip(
        jobs, ["double", "triple", "double"], ["default", "other", "default"], strict=True
    ):
        publish = only(spans, f"{task} publish", job.id)
        process = only(spans, f"{task} process", job.id)
        assert parent_id(publish) == request_id
        assert parent_id(process) == ids(publish)[1]
        assert (process.attributes or {})["messaging.destination.name"] == queue
        assert ids(process)[0] == request.get_span_context().trace_id


async def test_jobs_without_a_usable_context_get_root_spans(
    app: App, tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    """A cron tick carries no context (the worker's cron loop has no active span, and ticks
    start no trace), and a job whose trace field is not a carrier still runs: both get a root
    process span."""

    @app.cron(every=0.2)
    async def beat() -> None: ...

    @app.task
    async def plain() -> int:
        return 1

    job = await plain.enqueue()
    await app.redis.hset(app.keys().job(job.id), "trace", b"not json")
    async with Worker(app):
        assert await job.result(timeout=10) == 1
        for _ in range(100):
            if any(s.name == "beat process" for s in exporter.get_finished_spans()):
                break
            await asyncio.sleep(0.05)

    spans = list(exporter.get_finished_spans())
    assert only(spans, "plain process").parent is None
    ticks = [s for s in spans if s.name == "beat process"]
    assert ticks
    assert all(s.parent is None for s in ticks)
    assert not any(s.name == "beat publish" for s in spans)
    tick_id = (ticks[0].attributes or {})["messaging.message.id"]
    assert not await app.redis.hexists(app.keys().job(str(tick_id)), "trace")


_UNTRACED = """
import asyncio, sys
{setup}
from aioq import App, Worker

async def main() -> None:
    app = App("{name}", redis_url=sys.argv[1])

    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    {enqueue}
    await Worker(app, burst=True).run()
    assert await job.result(timeout=10) == 3
    print(repr(await app.redis.hget(app.keys().job(job.id), "trace")))
    print("opentelemetry.trace" in sys.modules)
    await app.aclose()

asyncio.run(main())
"""


@pytest.mark.parametrize(
    ("setup", "enqueue", "carried", "imported"),
    [
        pytest.param(
            "sys.modules['opentelemetry'] = None  # as if not installed",
            "job = await add.enqueue(1, 2)",
            "None",
            "False",
            id="opentelemetry-not-installed",
        ),
        pytest.param(
            # installed, but imported by nobody (redis-py imports it when the SDK is there)
            "sys.modules['opentelemetry.sdk'] = None",
            "job = await add.enqueue(1, 2)",
            "None",
            "False",
            id="opentelemetry-not-imported",
        ),
        pytest.param(
            "from opentelemetry import trace",
            "with trace.get_tracer('t').start_as_current_span('request'):\n"
            "        job = await add.enqueue(1, 2)",
            "None",
            "True",
            id="no-tracer-provider",
        ),
        pytest.param(
            "from opentelemetry import context, propagate",
            "context.attach(propagate.extract({'traceparent': '%s'}))\n"
            "    job = await add.enqueue(1, 2)",
            'b\'{"traceparent":"%s"}\'',
            "True",
            id="no-provider-but-a-remote-context",
        ),
    ],
)
def test_without_a_tracer_provider_nothing_is_written(
    redis_url: str, setup: str, enqueue: str, carried: str, imported: str
) -> None:
    """In a fresh process with no tracer provider set (the API's default no-op), or without
    OpenTelemetry at all, jobs run and their record has no trace field; aioq itself never
    imports OpenTelemetry. Only a span context already active (say, extracted from a request)
    is carried as it is."""
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    if "%s" in enqueue:
        enqueue, carried = enqueue % traceparent, carried % traceparent
    script = _UNTRACED.format(setup=setup, enqueue=enqueue, name=unique_name())
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), redis_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == [carried, imported]
