"""Prometheus metrics (``Worker(metrics_port=)``, ``aioq worker --metrics-port``) scraped over
real HTTP, and the job logs (``aioq.jobs``: the INFO summary, per-job DEBUG lines,
``--log-format json``)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import socket
import sys
import urllib.request

import pytest

import aioq.metrics
from aioq import App, TaskFailed, Worker, current_job
from aioq.metrics import MissingMetricsExtra
from aioq.views import queue_stats

from .conftest import unique_name
from .helpers import spawn_worker, stop

pytestmark = pytest.mark.anyio

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse(text: str) -> Samples:
    """The samples of a text exposition, by metric name and label set."""
    out: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m is not None, f"not a sample line: {line!r}"
        labels = frozenset(_LABEL.findall(m.group(2) or ""))
        out[m.group(1), labels] = float(m.group(3))
    return out


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def http_get(port: int, path: str = "/metrics") -> tuple[str, dict[str, str], str]:
    """One real HTTP/1.1 request over TCP: (status line, headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.decode().partition("\r\n\r\n")
    status, *lines = head.split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
    assert int(headers["content-length"]) == len(body.encode())
    return status, headers, body


async def scrape(port: int) -> Samples:
    status, headers, body = await http_get(port)
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-type"].startswith("text/plain; version=")
    return parse(body)


def check_histogram(samples: Samples, task: str, queue: str) -> tuple[float, float]:
    """Asserts the buckets are cumulative and end at the count; returns (count, sum)."""
    name = "aioq_job_duration_seconds"
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (n, labels), v in samples.items()
        if n == f"{name}_bucket" and dict(labels)["task"] == task
    )
    assert len(buckets) == 16
    values = [v for _, v in buckets]
    assert values == sorted(values)
    count = sample(samples, f"{name}_count", task=task, queue=queue)
    assert buckets[-1] == (float("inf"), count)
    return count, sample(samples, f"{name}_sum", task=task, queue=queue)


async def test_counters_and_histogram_count_each_outcome(app: App) -> None:
    """Succeeded, failed and retried jobs are counted by task and queue, with durations."""

    @app.task
    async def nap() -> None:
        await asyncio.sleep(0.02)

    @app.task
    async def boom() -> None:
        raise ValueError("no")

    @app.task(retries=1, backoff=0.01)
    async def flaky() -> int:
        if current_job().attempt == 1:
            raise ValueError("first time")
        return 2

    port = free_port()
    async with Worker(app, concurrency=10, metrics_port=port) as w:
        assert w.metrics_address == ("127.0.0.1", port)
        naps = [await nap.enqueue() for _ in range(3)]
        booms = [await boom.enqueue() for _ in range(2)]
        flaky_job = await flaky.enqueue()
        for job in naps:
            await job.result(timeout=5)
        for job in booms:
            with pytest.raises(TaskFailed):
                await job.result(timeout=5)
        assert await flaky_job.result(timeout=5) == 2
        s = await scrape(port)
    q = "default"
    assert sample(s, "aioq_jobs_started_total", task="nap", queue=q) == 3
    assert sample(s, "aioq_jobs_succeeded_total", task="nap", queue=q) == 3
    assert sample(s, "aioq_jobs_started_total", task="boom", queue=q) == 2
    assert sample(s, "aioq_jobs_failed_total", task="boom", queue=q) == 2
    assert sample(s, "aioq_jobs_succeeded_total", task="boom", queue=q) == 0
    assert sample(s, "aioq_jobs_started_total", task="flaky", queue=q) == 2
    assert sample(s, "aioq_jobs_retried_total", task="flaky", queue=q) == 1
    assert sample(s, "aioq_jobs_succeeded_total", task="flaky", queue=q) == 1
    assert sample(s, "aioq_jobs_failed_total", task="flaky", queue=q) == 0
    count, total = check_histogram(s, "nap", q)
    assert count == 3
    assert 0.06 <= total < 3.0
    le_10ms = sample(s, "aioq_job_duration_seconds_bucket", task="nap", queue=q, le="0.01")
    assert le_10ms == 0  # each slept 20 ms
    assert check_histogram(s, "boom", q)[0] == 2
    assert check_histogram(s, "flaky", q)[0] == 2
    assert sample(s, "aioq_jobs_in_flight") == 0


async def test_in_flight_and_queue_depths(app: App, redis_url: str) -> None:
    """In-flight and queued/scheduled/running/dead depths match the queue at scrape time."""
    release, started = asyncio.Event(), asyncio.Event()

    @app.task
    async def block() -> None:
        started.set()
        await release.wait()

    @app.task
    async def quick() -> None:
        return None

    port = free_port()
    async with Worker(app, concurrency=1, metrics_port=port):
        async with App(app.name, redis_url=app.redis_url) as producer:  # knows no tasks
            await producer.enqueue("ghost")  # a task no worker knows: dead-lettered
        for _ in range(200):
            if (await queue_stats(app, ["default"]))[0].dead == 1:
                break
            await asyncio.sleep(0.02)
        blocker = await block.enqueue()
        await asyncio.wait_for(started.wait(), 5)
        waiting = [await quick.enqueue() for _ in range(2)]  # no free slot: they stay queued
        await quick.options(delay=60).enqueue()
        s = await scrape(port)
        assert sample(s, "aioq_jobs_in_flight") == 1
        depth = {
            state: sample(s, "aioq_queue_depth", queue="default", state=state)
            for state in ("queued", "scheduled", "running", "dead")
        }
        assert depth == {"queued": 2, "scheduled": 1, "running": 1, "dead": 1}
        release.set()
        await blocker.result(timeout=5)
        for job in waiting:
            await job.result(timeout=5)
        cached = await scrape(port)  # within the cache's second: the same depths
        assert sample(cached, "aioq_queue_depth", queue="default", state="queued") == 2
        await asyncio.sleep(1.1)
        s = await scrape(port)
    assert sample(s, "aioq_jobs_in_flight") == 0
    assert sample(s, "aioq_queue_depth", queue="default", state="queued") == 0
    assert sample(s, "aioq_queue_depth", queue="default", state="running") == 0
    assert sample(s, "aioq_queue_depth", queue="default", state="scheduled") == 1
    assert sample(s, "aioq_jobs_succeeded_total", task="quick", queue="default") == 2


async def test_other_paths_are_404_and_the_port_closes_on_stop(app: App) -> None:
    """Only GET /metrics is served; port 0 picks a free port, released when the worker stops."""
    async with Worker(app, metrics_port=0) as w:
        assert w.metrics_address is not None
        port = w.metrics_address[1]
        status, _, body = await http_get(port, "/")
        assert status == "HTTP/1.1 404 Not Found"
        assert body == "not found\n"
        status, _, _ = await http_get(port, "/metrics?x=1")
        assert status == "HTTP/1.1 200 OK"
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_openmetrics_when_asked_for(app: App) -> None:
    """A scraper that accepts OpenMetrics gets it (prometheus_client's negotiation)."""
    async with Worker(app, metrics_port=0) as w:
        assert w.metrics_address is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", w.metrics_address[1])
        writer.write(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
            b"Accept: application/openmetrics-text; version=1.0.0\r\n\r\n"
        )
        raw = (await reader.read()).decode()
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition("\r\n\r\n")
    assert "content-type: application/openmetrics-text" in head.lower()
    assert "# TYPE aioq_jobs_started counter" in body
    assert body.endswith("# EOF\n")


async def test_metrics_without_the_extra_name_it(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    """No prometheus_client: Worker(metrics_port=) raises at once, naming aioq[metrics];
    a worker without metrics does not need it."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import raises ImportError
    with pytest.raises(MissingMetricsExtra, match=r"pip install 'aioq-redis\[metrics\]'"):
        Worker(app, metrics_port=0)
    Worker(app)


async def test_no_observer_unless_metrics_or_job_logs(app: App) -> None:
    """Without metrics and with aioq.jobs at INFO (the CLI's default) or above, the runner
    records nothing per job; at INFO only the summary runs."""
    jobs_log = logging.getLogger("aioq.jobs")
    before = jobs_log.level
    try:
        jobs_log.setLevel(logging.INFO)
        async with Worker(app) as w:
            assert w.runner.observer is None
            assert w._summary is not None
            assert w.metrics is None
        jobs_log.setLevel(logging.WARNING)
        async with Worker(app) as w:
            assert w.runner.observer is None
            assert w._summary is None
    finally:
        jobs_log.setLevel(before)


async def test_job_log_lines_carry_the_job_fields(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    """With aioq.jobs at DEBUG each attempt logs a start and a finish with the job's fields."""

    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    with caplog.at_level(logging.DEBUG, logger="aioq.jobs"):
        async with Worker(app) as w:
            assert w.runner.observer is not None
            job = await add.enqueue(1, 2)
            assert await job.result(timeout=5) == 3
    records = [r for r in caplog.records if r.name == "aioq.jobs" and r.levelno == logging.DEBUG]
    start, finish = records
    for r in records:
        assert r.__dict__["job_id"] == job.id
        assert r.__dict__["task"] == "add"
        assert r.__dict__["queue"] == "default"
        assert r.__dict__["attempt"] == 1
        assert job.id in r.getMessage()
    assert start.__dict__["event"] == "start"
    assert finish.__dict__["event"] == "finish"
    assert finish.__dict__["outcome"] == "succeeded"
    assert 0 <= finish.__dict__["duration"] < 5


async def test_default_level_logs_a_summary_and_every_failure_and_retry(
    app: App, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At INFO: no line per job, a periodic summary with the counts and queue depths, one
    for the last stretch at stop, and each failure (WARNING) and retry (INFO) on its own."""
    monkeypatch.setattr(aioq.metrics, "SUMMARY_EVERY", 0.3)
    release = asyncio.Event()

    @app.task
    async def ok() -> None:
        return None

    @app.task
    async def boom() -> None:
        raise ValueError("no")

    @app.task(retries=1, backoff=0.01)
    async def flaky() -> None:
        if current_job().attempt == 1:
            raise ValueError("first time")

    @app.task
    async def hold() -> None:
        await release.wait()

    with caplog.at_level(logging.INFO):
        async with Worker(app, concurrency=1) as w:
            oks = [await ok.enqueue() for _ in range(3)]
            failing = await boom.enqueue()
            retried = await flaky.enqueue()
            for job in oks:
                await job.result(timeout=5)
            with pytest.raises(TaskFailed):
                await failing.result(timeout=5)
            await retried.result(timeout=5)
            held = await hold.enqueue()
            await ok.enqueue()  # waits behind `hold` (one slot): queued in the next summary
            for _ in range(100):
                if w.running:
                    break
                await asyncio.sleep(0.02)
            first = [r for r in caplog.records if r.__dict__.get("event") == "summary"]
            for _ in range(100):  # a summary while `hold` runs and one job waits
                summaries = [r for r in caplog.records if r.__dict__.get("event") == "summary"]
                if any(r.__dict__["running"] == 1 for r in summaries[len(first) :]):
                    break
                await asyncio.sleep(0.05)
            release.set()
            await held.result(timeout=5)
    jobs = [r for r in caplog.records if r.name == "aioq.jobs"]
    assert jobs
    assert all(r.__dict__["event"] == "summary" for r in jobs)
    assert all(r.levelno == logging.INFO for r in jobs)
    total = {k: sum(r.__dict__[k] for r in jobs) for k in ("succeeded", "failed", "retried")}
    assert total == {"succeeded": 3 + 1 + 1 + 1, "failed": 1, "retried": 1}
    busy = next(r for r in jobs if r.__dict__["running"] == 1 and "queued" in r.__dict__)
    assert busy.__dict__["queued"] == 1
    assert busy.__dict__["queues"]["default"]["queued"] == 1
    assert "1 running" in busy.getMessage()
    assert "queued 1 (default 1)" in busy.getMessage()
    assert all(r.__dict__["jobs_per_s"] >= 0 for r in jobs)
    failures = [r for r in caplog.records if failing.id in r.getMessage()]
    assert [(r.name, r.levelname) for r in failures] == [("aioq.worker", "WARNING")]
    assert "ValueError: no" in failures[0].getMessage()
    retries = [r for r in caplog.records if retried.id in r.getMessage()]
    assert [(r.name, r.levelname) for r in retries] == [("aioq.worker", "INFO")]
    assert "retrying" in retries[0].getMessage()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as r:
        return str(r.read().decode())


async def test_cli_metrics_port_and_json_logs(redis_url: str) -> None:
    """`aioq worker --metrics-port P --log-format json` serves metrics and logs JSON lines:
    at DEBUG one per job start and finish, at INFO the summary with its figures as keys."""
    name = unique_name()
    port = free_port()
    proc = spawn_worker(
        "tests.apps.basic:app", redis_url, "--log-level", "debug",
        "--metrics-port", str(port), "--log-format", "json",
        env={"AIOQ_APP_NAME": name},
    )  # fmt: skip
    app = App(name, redis_url=redis_url)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        for _ in range(500):
            try:
                await asyncio.to_thread(_get, url)
                break
            except OSError:
                assert proc.poll() is None, "the worker exited"
                await asyncio.sleep(0.02)
        job = await app.enqueue("add", 2, 3)
        assert await job.result(timeout=10) == 5
        s = parse(await asyncio.to_thread(_get, url))
        assert sample(s, "aioq_jobs_started_total", task="add", queue="default") == 1
        assert sample(s, "aioq_jobs_succeeded_total", task="add", queue="default") == 1
        assert check_histogram(s, "add", "default")[0] == 1
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=20)
    finally:
        assert stop(proc) == 0
        await app.aclose()
    lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in lines)
    mine = [r for r in lines if r.get("job_id") == job.id]
    assert [r["event"] for r in mine] == ["start", "finish"]
    start, finish = mine
    assert start["logger"] == "aioq.jobs"
    assert start["level"] == "debug"
    assert (start["task"], start["queue"], start["attempt"]) == ("add", "default", 1)
    assert finish["outcome"] == "succeeded"
    assert isinstance(finish["duration"], float)
    assert job.id in finish["message"]
    assert any("metrics at http://127.0.0.1" in r["message"] for r in lines)
    summaries = [r for r in lines if r.get("event") == "summary"]  # at least one, at stop
    assert all((r["logger"], r["level"]) == ("aioq.jobs", "info") for r in summaries)
    assert sum(r["succeeded"] for r in summaries) == 1
    assert sum(r["failed"] + r["retried"] for r in summaries) == 0
    assert all(isinstance(r["jobs_per_s"], float) for r in summaries)
