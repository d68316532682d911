"""The ``aioq`` command line (typer): ``aioq worker``, ``aioq demo``, ``aioq info``; the
operations commands (jobs, job, dlq, cancel, retry, purge, pause, resume, enqueue) are in
``cli_ops.py``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from redis.exceptions import RedisError

from . import run_worker
from .app import App
from .embedded import RedisServerNotFound
from .errors import RedisUnavailable
from .ratelimit import parse_rate

T = TypeVar("T")

cli = typer.Typer(
    name="aioq",
    help="aioq: an asyncio-native task queue on Redis streams.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str) -> typer.Exit:
    typer.echo(f"aioq: {message}", err=True)
    return typer.Exit(2)


def load_app(target: str) -> App:
    try:
        return run_worker.load_app(target)
    except run_worker.CliError as exc:
        raise fail(str(exc)) from None


@cli.command()
def worker(
    target: Annotated[str, typer.Argument(metavar="MODULE:APP", help="the app to run")],
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1)] = 100,
    queue: Annotated[
        list[str] | None, typer.Option("--queue", "-q", help="queue to serve (repeatable)")
    ] = None,
    burst: Annotated[
        bool, typer.Option(help="exit once every queue is empty and nothing scheduled is due")
    ] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
    shutdown_timeout: Annotated[
        float, typer.Option(help="seconds running jobs get to finish on SIGTERM/SIGINT")
    ] = 10.0,
    embedded_redis: Annotated[
        bool,
        typer.Option(help="start a private redis-server on a unix socket and use it"),
    ] = False,
    metrics_port: Annotated[
        int | None, typer.Option(help="serve Prometheus metrics at :PORT/metrics")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="address the metrics server binds")] = (
        "127.0.0.1"
    ),
    log_format: Annotated[str, typer.Option(help="text, or json: one object per line")] = "text",
) -> None:
    """Run a worker until SIGTERM/SIGINT (or, with --burst, until the queues are empty)."""
    try:
        run_worker.run(target, concurrency, queue, burst, log_level, shutdown_timeout,
                       embedded_redis, metrics_port, metrics_host, log_format)  # fmt: skip
    except run_worker.CliError as exc:
        raise fail(str(exc)) from None


@cli.command()
def info(
    target: Annotated[str, typer.Argument(metavar="MODULE:APP", help="the app to inspect")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts")] = False,
) -> None:
    """Queues of an app (queued, running, scheduled, failed, dead, paused), its workers, cron
    schedules with their next tick, and the rate limits in force."""
    from .inspect import cron_stats, queue_stats, rate_limit_stats, worker_stats

    app = load_app(target)

    async def collect() -> dict[str, Any]:
        return {
            "app": app.name,
            "queues": [s.as_dict() for s in await queue_stats(app)],
            "workers": [w.as_dict() for w in await worker_stats(app)],
            "crons": await cron_stats(app),
            "rate_limits": await rate_limit_stats(app),
        }

    report = run(app, collect)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    rows, workers = report["queues"], report["workers"]
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"aioq app {app.name!r} at {app.redis_url}")
    columns = ("queue", "queued", "running", "scheduled", "failed", "dead")
    for column in (*columns, "paused"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    for row in rows:
        cells = [str(row[c]) for c in columns]
        levels = sorted(row["by_priority"].items(), reverse=True)
        if any(level != 0 for level, _ in levels):  # e.g. "12 (p9 2, p0 10)"
            cells[1] += " (" + ", ".join(f"p{level} {n}" for level, n in levels) + ")"
        table.add_row(*cells, "paused" if row["paused"] else "")
    console.print(table)
    _extra_tables(console, report)
    if not workers:
        console.print("no worker alive (none has sent a heartbeat in the last 6 s)")
        return
    table = Table(title=f"{len(workers)} worker(s) alive")
    for column in ("worker", "host", "pid", "queues", "concurrency", "running", "done",
                   "uptime", "last heartbeat"):  # fmt: skip
        table.add_column(
            column, justify="left" if column in ("worker", "host", "queues") else "right"
        )
    for w in workers:
        table.add_row(
            w["consumer"], w["host"], str(w["pid"]), ",".join(w["queues"]),
            str(w["concurrency"]), str(w["running"]), str(w["done"]),
            _duration(w["uptime"]), f"{w['last_beat']:.1f}s ago",
        )  # fmt: skip
    console.print(table)


def _extra_tables(console: Any, report: dict[str, Any]) -> None:
    from rich.table import Table

    if report["crons"]:
        table = Table(title="cron schedules")
        for column in ("schedule", "queue", "catch-up", "last tick (UTC)", "next tick (UTC)"):
            table.add_column(column)
        for c in report["crons"]:
            table.add_row(c["schedule"], c["queue"], c["catch_up"], c["last_tick"] or "never",
                          c["next_tick"])  # fmt: skip
        console.print(table)
    if report["rate_limits"]:
        table = Table(title="rate limits in force")
        for column in ("queue", "task", "limit"):
            table.add_column(column)
        for r in report["rate_limits"]:
            table.add_row(r["queue"], r["task"], r["limit"])
        console.print(table)


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def run(app: App, work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work`` against the app's Redis and close it; a Redis that does not answer (or
    fails) is one line, exit 2. Redis is pinged first, so a dead one fails before any work."""

    async def main() -> T:
        try:
            await app.ping()
            return await work()
        finally:
            await app.aclose()

    try:
        return asyncio.run(main())
    except RedisUnavailable as exc:
        raise fail(str(exc)) from None
    except (RedisError, OSError) as exc:
        raise fail(f"Redis at {app.redis_url} failed: {type(exc).__name__}: {exc}") from None


@cli.command("rate-limit")
def rate_limit(
    target: Annotated[str, typer.Argument(metavar="MODULE:APP", help="the app")],
    task: Annotated[str, typer.Argument(help="the task's name")],
    rate: Annotated[
        str | None, typer.Argument(help='"N/s", "N/m" or "N/h"; omit with --clear')
    ] = None,
    clear: Annotated[
        bool, typer.Option("--clear", help="remove the override: the code's limit applies")
    ] = False,
) -> None:
    """Change a task's global rate limit for every running worker, without restarts."""
    app = load_app(target)
    if task not in app.tasks:
        known = ", ".join(sorted(app.tasks)) or "none"
        raise fail(f"unknown task {task!r} in {target} (tasks: {known})")
    if (rate is None) == (not clear):
        raise fail("give a rate such as 10/m, or --clear")
    if rate is not None:
        try:
            parse_rate(rate)
        except ValueError as exc:
            raise fail(str(exc)) from None

    async def apply() -> dict[str, str]:
        await app.set_rate_limit(task, rate)
        return await app.rate_limits(app.tasks[task].queue)

    limits = run(app, apply)
    typer.echo(f"{task}: {limits.get(task, 'no limit')}")


@cli.command()
def demo(
    jobs: Annotated[int, typer.Option(help="how many example jobs to enqueue", min=1)] = 200,
    concurrency: Annotated[int, typer.Option(min=1)] = 50,
    port: Annotated[
        int, typer.Option(help="dashboard port on 127.0.0.1 (0: a free one)", min=0, max=65535)
    ] = 0,
    keep: Annotated[
        bool,
        typer.Option(
            help="after the batch, keep the worker, Redis and dashboard up with a trickle of "
            "example jobs until Ctrl-C/SIGTERM"
        ),
    ] = False,
) -> None:
    """The quickstart: a private redis-server, a worker, example jobs, a live view (the web
    dashboard and an `aioq info` command line for the demo's Redis while it runs)."""
    from .demo import DemoError, run_demo

    try:
        run_demo(jobs=jobs, concurrency=concurrency, port=port, keep=keep)
    except (RedisServerNotFound, DemoError) as exc:
        raise fail(str(exc)) from None


from . import cli_ops  # noqa: E402, F401  (registers jobs, job, dlq, cancel, retry, purge, ...)


@cli.command()
def dashboard(
    target: Annotated[str, typer.Argument(metavar="MODULE:APP", help="the app to show")],
    port: Annotated[int, typer.Option(help="port to serve on", min=0, max=65535)] = 8000,
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
) -> None:
    """Serve the web dashboard (queues, workers, failed jobs, dead letters, crons, limits)."""
    try:
        import uvicorn

        from .dashboard import dashboard as make_dashboard
    except ImportError as exc:
        missing = (exc.name or "starlette").split(".")[0]
        raise fail(f"the dashboard needs {missing}: pip install 'aioq[dashboard]'") from None
    app = load_app(target)
    typer.echo(f"aioq dashboard for {app.name!r} at http://{host}:{port}/", err=True)
    uvicorn.run(make_dashboard(app), host=host, port=port, log_level="warning")
