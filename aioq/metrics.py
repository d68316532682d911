"""Prometheus metrics and job log lines for a worker.

``Worker(app, metrics_port=P)`` (``aioq worker --metrics-port P``) serves ``GET /metrics``
from a tiny asyncio HTTP server in the worker's loop, written by ``prometheus_client`` (the
``aioq[metrics]`` extra; the Prometheus text format, or OpenMetrics when the scraper asks
for it):

* ``aioq_jobs_started_total``, ``aioq_jobs_succeeded_total``, ``aioq_jobs_failed_total``,
  ``aioq_jobs_retried_total`` — counters labelled ``task`` and ``queue``;
* ``aioq_job_duration_seconds`` — a histogram of attempt durations (every attempt that ended
  with an outcome: succeeded, failed, retried or cancelled), labelled ``task`` and ``queue``;
* ``aioq_jobs_in_flight`` — jobs this worker runs now;
* ``aioq_queue_depth{queue,state}`` — ``queued``, ``scheduled``, ``running`` and ``dead`` of
  each served queue, read from Redis at scrape time (cached for ``DEPTH_TTL`` seconds, so many
  scrapers do not multiply Redis reads).

Counters are per worker process (Prometheus sums them across workers); depths are per queue,
so every worker of a queue reports the same numbers.

Why ``prometheus_client`` writes the exposition but does not count: counting is on the
worker's per-job path, and its metric objects cost more there than the rest of the
bookkeeping. Measured per job (a started counter, a succeeded counter and a duration
observation, ``timeit``, prometheus-client 0.26, Python 3.11, this 2-core machine): plain
dicts keyed by ``(task, queue)`` 0.29 us; ``prometheus_client`` children cached per key
1.6 us; through ``.labels(task, queue)`` each time 6.5 us. A no-op job costs a worker about
40 us in all, so its objects would take 4-16 % of the throughput of a worker with metrics on.
So the worker counts in dicts (``Metrics``) and a collector (``_Collector``) hands them to
``prometheus_client`` as metric families at scrape time: its format, escaping and content
negotiation, none of its locks per job.

Job logs, on the logger ``aioq.jobs``:

* at INFO (``aioq worker``'s default level), ``JobSummary``: one line every ``SUMMARY_EVERY``
  seconds while the worker finished or ran jobs (jobs/s, succeeded, failed, retried,
  cancelled, running, and the served queues' depths), and one for the last stretch when the
  worker stops. Its counts are the completer's, a few ints per written batch, so the default
  worker runs at the speed of one with logging off. Each failure and retry is still logged on
  its own, at WARNING and INFO, by the runner (logger ``aioq.worker``).
* at DEBUG, ``JobObserver``: one line per job start and one per finish. Logging costs some
  10 us per line, more than the rest of a no-op job's time in the worker, which is why these
  are not on by default (``--log-level debug`` turns them on).

The runner calls ``JobObserver.started`` / ``finished`` around each job only when metrics or
the per-job lines are enabled; otherwise it has no observer and pays nothing. Recording is a
few dict increments keyed by ``(task, queue)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import App
    from .message import Delivery
    from .worker.core import Worker

log = logging.getLogger("aioq.metrics")
jobs_log = logging.getLogger("aioq.jobs")

BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
"""Upper bounds (seconds) of the duration histogram's buckets, plus ``+Inf``."""

DEPTH_TTL = 1.0
"""Seconds a scrape reuses the queue depths read by the previous one."""

SUMMARY_EVERY = 10.0
"""Seconds between two summary lines of ``aioq.jobs`` at INFO (while there is activity)."""

Key = tuple[str, str]  # (task, queue)

_OUTCOMES = {"ok": "succeeded", "fail": "failed", "retry": "retried", "cancelled": "cancelled"}


class Metrics:
    """The counters and histogram of one worker, and their text exposition."""

    def __init__(self) -> None:
        self.started: dict[Key, int] = {}
        self.succeeded: dict[Key, int] = {}
        self.failed: dict[Key, int] = {}
        self.retried: dict[Key, int] = {}
        # per key: one count per bucket (not cumulative; the last is +Inf only), sum, count
        self.buckets: dict[Key, list[int]] = {}
        self.sums: dict[Key, float] = {}

    def observe(self, key: Key, seconds: float) -> None:
        counts = self.buckets.get(key)
        if counts is None:
            counts = self.buckets[key] = [0] * (len(BUCKETS) + 1)
            self.sums[key] = 0.0
        counts[bisect_left(BUCKETS, seconds)] += 1
        self.sums[key] += seconds


class MissingMetricsExtra(ImportError):
    """``metrics_port`` was given but ``prometheus_client`` is not installed."""


def require_prometheus() -> None:
    """Raise ``MissingMetricsExtra`` naming the extra unless ``prometheus_client`` imports."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise MissingMetricsExtra(
            "metrics (--metrics-port, Worker(metrics_port=)) need prometheus-client, which is "
            "not installed: pip install 'aioq-redis[metrics]'"
        ) from exc


class _Collector:
    """Hands ``Metrics`` (and the scrape's in-flight count and depths) to prometheus_client."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.in_flight = 0
        self.depths: dict[str, dict[str, int]] | None = None

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )
        from prometheus_client.utils import floatToGoString

        m, labels = self.metrics, ["task", "queue"]
        for name, help_, values in (
            ("aioq_jobs_started", "Jobs (attempts) started.", m.started),
            ("aioq_jobs_succeeded", "Jobs that succeeded.", m.succeeded),
            ("aioq_jobs_failed", "Jobs that failed for good.", m.failed),
            ("aioq_jobs_retried", "Attempts that failed and will be retried.", m.retried),
        ):
            family = CounterMetricFamily(name, help_, labels=labels)
            for key, n in sorted(values.items()):
                family.add_metric(list(key), n)
            yield family
        hist = HistogramMetricFamily(
            "aioq_job_duration_seconds",
            "Duration of job attempts that ended with an outcome.",
            labels=labels,
        )
        bounds = [floatToGoString(b) for b in BUCKETS] + ["+Inf"]  # type: ignore[no-untyped-call]
        for key, counts in sorted(m.buckets.items()):
            cumulative, total = [], 0
            for bound, n in zip(bounds, counts, strict=True):
                total += n
                cumulative.append((bound, total))
            hist.add_metric(list(key), cumulative, sum_value=m.sums[key])
        yield hist
        yield GaugeMetricFamily(
            "aioq_jobs_in_flight", "Jobs this worker is running now.", value=self.in_flight
        )
        if self.depths is not None:
            depth = GaugeMetricFamily(
                "aioq_queue_depth", "Jobs of a queue by state, read from Redis.",
                labels=["queue", "state"],
            )  # fmt: skip
            for queue, states in self.depths.items():
                for state, n in states.items():
                    depth.add_metric([queue, state], n)
            yield depth


class JobObserver:
    """Records a job's start and finish into ``metrics`` and/or the ``aioq.jobs`` log (DEBUG)."""

    __slots__ = ("log_jobs", "metrics")

    def __init__(self, metrics: Metrics | None, log_jobs: bool) -> None:
        self.metrics = metrics
        self.log_jobs = log_jobs

    def started(self, queue: str, d: Delivery) -> float:
        m = self.metrics
        if m is not None:
            key = (d.task, queue)
            m.started[key] = m.started.get(key, 0) + 1
        if self.log_jobs and jobs_log.isEnabledFor(logging.DEBUG):
            jobs_log.debug(
                "job %s started: task %s, queue %s, attempt %d", d.job_id, d.task, queue,
                d.attempt,
                extra={"event": "start", "job_id": d.job_id, "task": d.task, "queue": queue,
                       "attempt": d.attempt},
            )  # fmt: skip
        return time.monotonic()

    def finished(self, queue: str, d: Delivery, kind: str | None, t0: float) -> None:
        """``kind`` is the completion record's first field, None when nothing is recorded
        (the lease was lost or the worker is stopping: whoever runs it next records it)."""
        seconds = time.monotonic() - t0
        m = self.metrics
        if m is not None and kind is not None:
            key = (d.task, queue)
            if kind == "ok":
                m.succeeded[key] = m.succeeded.get(key, 0) + 1
            elif kind == "retry":
                m.retried[key] = m.retried.get(key, 0) + 1
            elif kind == "fail":
                m.failed[key] = m.failed.get(key, 0) + 1
            m.observe(key, seconds)
        if self.log_jobs and jobs_log.isEnabledFor(logging.DEBUG):
            outcome = "interrupted" if kind is None else _OUTCOMES.get(kind, kind)
            jobs_log.debug(
                "job %s %s: task %s, queue %s, attempt %d, %.3fs", d.job_id, outcome, d.task,
                queue, d.attempt, seconds,
                extra={"event": "finish", "job_id": d.job_id, "task": d.task, "queue": queue,
                       "attempt": d.attempt, "outcome": outcome,
                       "duration": round(seconds, 6)},
            )  # fmt: skip


class JobSummary:
    """The periodic INFO line of ``aioq.jobs``: what the worker did since the previous one.

    Reads the completer's running counts (``Completer.written``) and the queue depths (one
    pipelined read per summary, ``inspect.queue_stats``); nothing per job.
    """

    def __init__(self, worker: Worker, every: float | None = None) -> None:
        self.worker, self.every = worker, SUMMARY_EVERY if every is None else every
        self.depths = QueueDepths(worker.app, [k.queue for k in worker.queue_keys], ttl=0.0)
        self._seen: dict[str, int] = {}
        self._since = time.monotonic()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            await self.log()

    async def log(self, final: bool = False) -> None:
        """Log one summary if jobs finished or ran since the last; ``final``: the worker is
        stopping (Redis is not read then: it may be what stops it)."""
        now, written = time.monotonic(), dict(self.worker.completer.written)
        seen, seconds = self._seen, now - self._since
        d = {k: n - seen.get(k, 0) for k, n in written.items()}
        self._seen, self._since = written, now
        succeeded, retried, cancelled = d.get("ok", 0), d.get("retry", 0), d.get("cancelled", 0)
        failed = d.get("fail", 0) + d.get("dead", 0)
        finished = succeeded + failed + retried + cancelled
        running = len(self.worker.runner)
        if not finished and not running:
            return
        fields: dict[str, Any] = {
            "event": "summary", "seconds": round(seconds, 3),
            "jobs_per_s": round(finished / seconds, 1) if seconds > 0 else 0.0,
            "finished": finished, "succeeded": succeeded, "failed": failed,
            "retried": retried, "cancelled": cancelled, "running": running,
        }  # fmt: skip
        text = (
            f"{finished} job(s) finished in {seconds:.1f}s ({fields['jobs_per_s']:g}/s): "
            f"{succeeded} succeeded, {failed} failed, {retried} retried, {cancelled} cancelled; "
            f"{running} running"
        )
        depths = None if final else await self.depths.get()
        if depths is not None:
            fields["queued"] = sum(q["queued"] for q in depths.values())
            fields["scheduled"] = sum(q["scheduled"] for q in depths.values())
            fields["queues"] = depths
            per_queue = ", ".join(f"{q} {v['queued']}" for q, v in depths.items())
            text += f"; queued {fields['queued']} ({per_queue}), scheduled {fields['scheduled']}"
        jobs_log.info("%s", text, extra=fields)


class QueueDepths:
    """Queue depths for scrapes, read through ``views.queue_stats`` at most every ``ttl``."""

    def __init__(self, app: App, queues: list[str], ttl: float = DEPTH_TTL) -> None:
        self.app, self.queues, self.ttl = app, queues, ttl
        self._value: dict[str, dict[str, int]] | None = None
        self._at = -float("inf")
        self._lock = asyncio.Lock()

    async def get(self) -> dict[str, dict[str, int]] | None:
        """The depths, or None when Redis did not answer (the scrape still succeeds)."""
        from .views import queue_stats

        async with self._lock:
            if time.monotonic() - self._at < self.ttl:
                return self._value
            try:
                stats = await asyncio.wait_for(queue_stats(self.app, self.queues), 5.0)
            except Exception as exc:
                log.warning("metrics: could not read queue depths: %s", exc)
                return None
            self._value = {
                s.queue: {
                    "queued": s.queued,
                    "scheduled": s.scheduled,
                    "running": s.running,
                    "dead": s.dead,
                }
                for s in stats
            }
            self._at = time.monotonic()
            return self._value


class MetricsServer:
    """``GET /metrics`` over a minimal HTTP/1.x server (one request per connection)."""

    def __init__(self, metrics: Metrics, in_flight: Callable[[], int], depths: QueueDepths) -> None:
        from prometheus_client import CollectorRegistry

        self.in_flight, self.depths = in_flight, depths
        self._collector = _Collector(metrics)
        self._registry = CollectorRegistry(auto_describe=False)  # this worker's metrics only
        self._registry.register(self._collector)
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on ``host:port`` (0: any free port); returns the address bound."""
        self._server = await asyncio.start_server(self._handle, host, port)
        sockname = self._server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
            method, _, rest = request.partition(b" ")
            path = rest.partition(b" ")[0].partition(b"?")[0]
            if method in (b"GET", b"HEAD") and path == b"/metrics":
                from prometheus_client.exposition import choose_encoder

                self._collector.in_flight = self.in_flight()
                self._collector.depths = await self.depths.get()
                encoder, ctype = choose_encoder(_header(request, b"accept"))
                body = encoder(self._registry)
                status = "200 OK"
            else:
                body, status, ctype = b"not found\n", "404 Not Found", "text/plain"
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            writer.write(head if method == b"HEAD" else head + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _header(request: bytes, name: bytes) -> str:
    """The value of header ``name`` (lower case) in a raw HTTP/1.x request head, or ''."""
    for line in request.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip().decode("latin-1")
    return ""
