"""OpenTelemetry tracing of jobs, an optional extra (``pip install 'aioq-redis[otel]'``).

The enqueuer's trace context travels in the job record (its ``trace`` field: the JSON object
``propagate.inject`` fills, W3C ``traceparent`` and whatever else the configured propagators
write), so the worker's span of each attempt is a child of the span that enqueued the job, in
another process and however much later::

    request (yours)
    └─ "<task> publish"     PRODUCER, one per job, in the enqueuing process
       └─ "<task> process"  CONSUMER, one per attempt, in the worker

Tracing is on in a process whose global tracer provider is a real one (the SDK's, set with
``trace.set_tracer_provider``, or by ``opentelemetry-instrument``), not the API's default no-op:

* every enqueue (``task.enqueue``, ``app.enqueue``, and ``enqueue_many``, one span per job)
  makes a ``publish`` span, a child of the active span or else the root of a new trace, ended
  when the enqueue round trip is; its context is what the job carries;
* the worker runs each attempt inside a ``process`` span whose parent is the carried context
  (a root span when the job carries none, or a malformed one: tracing never fails a job). It is
  the current span while the task runs, so the task's own spans are its children, and it ends
  with the attempt: status ERROR and an ``exception`` event when the attempt raised (it failed,
  timed out or will be retried), ``aioq.job.outcome`` saying how it ended.

Attributes follow the (experimental) messaging semantic conventions: ``messaging.system``
"aioq", ``messaging.destination.name`` (the queue), ``messaging.message.id`` (the job id),
``messaging.operation`` "publish"/"process" (with ``messaging.operation.type`` "send"/"process",
its newer name), ``messaging.client.id`` (the worker); and ``aioq.task``, ``aioq.job.attempt``.

With no provider configured nothing is written to the job, unless a span context is active
anyway (one a propagation middleware extracted from a request, say): it is carried unchanged,
so a worker that traces continues that trace. Cron ticks go through ``publish`` too, but start
no trace of their own (every worker of the queue fires each tick and all but one find it
written: that would leave a stray publish span per worker and tick); the worker's cron loop
normally has no active span, so a tick's process span is a root span.

Cost when off: aioq never imports OpenTelemetry itself (that takes ~50 ms). Until the program
has imported ``opentelemetry.trace`` (configuring a provider does; so does redis-py when the
SDK is installed), tracing is off for a dict lookup per enqueue and per fetched batch; after
that, for a read of the API's provider global and, per enqueue, a look at the active span
(~0.6 us in all). The tracer is made once per provider. When off, the runner starts jobs
exactly as without this module.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from .message import Delivery

log = logging.getLogger("aioq.tracing")

SYSTEM = "aioq"
"""The ``messaging.system`` of aioq's spans (and the name of its tracer)."""

_OUTCOMES = {"ok": "succeeded", "fail": "failed", "retry": "retried", "cancelled": "cancelled"}
TRACE = 12  # where the trace value sits in a prepared job (Call.prepare, ENQUEUE_ARGS order)

# Set once the program has imported opentelemetry.trace (see _load).
_global_provider: Callable[[], TracerProvider | None] | None = None
_get_current_span: Callable[[], Span] | None = None
_provider: object = None  # the provider _tracer was made for
_tracer: Tracer | None = None


def tracer() -> Tracer | None:
    """aioq's tracer, or None while tracing is off (no real tracer provider configured)."""
    get = _global_provider
    if get is None:
        if "opentelemetry.trace" not in sys.modules:
            return None  # nothing imported OpenTelemetry, so nothing configured it
        get = _load()
    provider = get()
    if provider is not _provider:
        _use(provider)
    return _tracer


def _load() -> Callable[[], TracerProvider | None]:
    global _global_provider, _get_current_span
    from opentelemetry import trace
    from opentelemetry.environment_variables import OTEL_PYTHON_TRACER_PROVIDER

    def set_one() -> TracerProvider | None:
        return trace._TRACER_PROVIDER

    get: Callable[[], TracerProvider | None] = trace.get_tracer_provider
    if hasattr(trace, "_TRACER_PROVIDER") and OTEL_PYTHON_TRACER_PROVIDER not in os.environ:
        # While no provider is set, get_tracer_provider() looks that variable up in os.environ
        # on every call (~2 us, for every enqueue); the API's global, which it returns once a
        # provider is set, tells the same in ~50 ns. (With the variable set, the first call
        # loads the provider it names.)
        get = set_one
    _get_current_span = trace.get_current_span
    _global_provider = get
    return get


def _use(provider: TracerProvider | None) -> None:
    global _provider, _tracer
    from opentelemetry import trace

    t: Tracer | None = None
    if provider is not None and not isinstance(
        provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider
    ):
        from . import __version__

        t = provider.get_tracer(SYSTEM, __version__)
        if isinstance(t, trace.NoOpTracer):  # e.g. the SDK's, with OTEL_SDK_DISABLED
            t = None
    _provider, _tracer = provider, t


def _span_active() -> bool:
    return _get_current_span is not None and _get_current_span().get_span_context().is_valid


# -- producer --------------------------------------------------------------------------------


def publish(jobs: Sequence[tuple[str, list[Any]]], *, new_trace: bool = True) -> Publishing | None:
    """Give each job about to be enqueued the trace context to carry, in place.

    ``jobs``: (queue, values) pairs as ``Call.prepare`` makes them: the job id first, the task
    name sixth, the trace value thirteenth (``TRACE``; left empty when there is nothing to
    carry). Returns the
    publish spans to end around the round trip (``with``), or None when none were made:
    tracing is off, or ``new_trace`` is false and no span is active (cron ticks).
    """
    t = tracer()
    if t is None:
        if _span_active():  # no provider here, but a context to pass on
            from opentelemetry import propagate

            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            value = orjson.dumps(carrier) if carrier else b""
            for _, job in jobs:
                job[TRACE] = value
        return None
    if not new_trace and not _span_active():
        return None
    from opentelemetry import propagate, trace

    spans: list[Span] = []
    for queue, job in jobs:
        job_id, task = job[0], job[5]
        span = t.start_span(
            f"{task} publish",
            kind=trace.SpanKind.PRODUCER,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.destination.name": queue,
                "messaging.message.id": job_id,
                "messaging.operation": "publish",
                "messaging.operation.type": "send",
                "aioq.task": task,
            },
        )
        spans.append(span)
        carrier = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        if carrier:
            job[TRACE] = orjson.dumps(carrier)
    return Publishing(spans)


class Publishing:
    """The publish spans of one enqueue round trip: ``with`` it around the round trip; an
    exception leaving the block is recorded on each (status ERROR)."""

    __slots__ = ("spans",)

    def __init__(self, spans: list[Span]) -> None:
        self.spans = spans

    def __enter__(self) -> Publishing:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        from opentelemetry.trace import Status, StatusCode

        for span in self.spans:
            if exc is not None:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            span.end()


# -- worker ----------------------------------------------------------------------------------


def processing(tracer: Tracer, queue: str, d: Delivery, consumer: str) -> Processing | None:
    """Start the process span of one attempt and make it current (in the calling task's
    context); None, logged, if OpenTelemetry raised: tracing must not cost a job its run."""
    try:
        return Processing(tracer, queue, d, consumer)
    except Exception:
        log.exception("tracing: could not start the span of job %s", d.job_id)
        return None


class Processing:
    """The process span of one attempt, current from ``__init__`` to ``end``."""

    __slots__ = ("span", "token")

    def __init__(self, tracer: Tracer, queue: str, d: Delivery, consumer: str) -> None:
        from opentelemetry import context, trace

        parent = _parent(d.trace)
        self.span = tracer.start_span(
            f"{d.task} process",
            context=parent,  # never the worker's own context: a job is not caused by it
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.destination.name": queue,
                "messaging.message.id": d.job_id,
                "messaging.operation": "process",
                "messaging.operation.type": "process",
                "messaging.client.id": consumer,
                "aioq.task": d.task,
                "aioq.job.attempt": d.attempt,
            },
        )
        self.token = context.attach(trace.set_span_in_context(self.span, parent))

    def end(self, record: tuple[Any, ...] | None) -> None:
        """End the span with the attempt's completion record (``worker/run.py``), None when
        the attempt was interrupted without an outcome (lease lost, or the worker stopping)."""
        from opentelemetry import context
        from opentelemetry.trace import Status, StatusCode

        span = self.span
        context.detach(self.token)
        try:
            kind = "" if record is None else str(record[0])
            span.set_attribute("aioq.job.outcome", _OUTCOMES.get(kind, "interrupted"))
            if record is not None and kind in ("fail", "retry"):
                message, exc_type, tb = record[4], record[5], record[6]
                span.add_event(
                    "exception",
                    {"exception.type": exc_type, "exception.message": message,
                     "exception.stacktrace": tb},
                )  # fmt: skip
                span.set_status(Status(StatusCode.ERROR, f"{exc_type}: {message}"))
        finally:
            span.end()


def _parent(raw: bytes | None) -> Context:
    """The context a job carries; an empty one (a root span) when none, or not a carrier."""
    from opentelemetry import propagate
    from opentelemetry.context import Context

    if raw:
        try:
            carrier = orjson.loads(raw)
        except orjson.JSONDecodeError:
            carrier = None
        if isinstance(carrier, dict) and all(isinstance(v, str) for v in carrier.values()):
            return propagate.extract(carrier, context=Context())
    return Context()
