"""The ``aioq`` command line (typer): ``aioq worker``, ``aioq demo``."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from .app import App
from .embedded import EmbeddedRedis, RedisServerNotFound
from .errors import RedisUnavailable
from .worker import Worker

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
    """Import ``module:attribute`` (the current directory is importable) and check it."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise fail(f"expected MODULE:APP (e.g. myproject.tasks:app), got {target!r}")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise fail(f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}") from None
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise fail(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(app, App):
        raise fail(f"{target} is a {type(app).__name__}, not an aioq.App")
    return app


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
) -> None:
    """Run a worker until SIGTERM/SIGINT (or, with --burst, until the queues are empty)."""
    _logging(log_level)
    app = load_app(target)
    queues = queue or None
    if queues:
        unknown = [q for q in queues if q not in app.queues]
        if unknown:
            raise fail(
                f"unknown queue(s) {', '.join(map(repr, unknown))}: app {app.name!r} "
                f"has {', '.join(map(repr, app.queues))}"
            )
    with contextlib.ExitStack() as stack:
        if embedded_redis:
            try:
                server = stack.enter_context(EmbeddedRedis())
            except RedisServerNotFound as exc:
                raise fail(str(exc)) from None
            app.redis_url = server.url
            typer.echo(f"aioq: embedded redis-server at {server.url}", err=True)
        w = Worker(app, concurrency=concurrency, queues=queues, burst=burst,
                   shutdown_timeout=shutdown_timeout)  # fmt: skip
        try:
            asyncio.run(_serve(w))
        except RedisUnavailable as exc:
            raise fail(str(exc)) from None


async def _serve(w: Worker) -> None:
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            logging.getLogger("aioq.worker").info("stopping: finishing running jobs")
            w.stop()
        else:  # a second signal: hand running jobs back now
            w.shutdown_timeout = 0
            w.runner.interrupt_all()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        await w.run()
    finally:
        await w.app.aclose()


@cli.command()
def info(
    target: Annotated[str, typer.Argument(metavar="MODULE:APP", help="the app to inspect")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts")] = False,
) -> None:
    """Queues of an app: queued, running, scheduled and dead jobs."""
    from .inspect import queue_stats

    app = load_app(target)

    async def collect() -> list[dict[str, object]]:
        try:
            return [s.as_dict() for s in await queue_stats(app)]
        finally:
            await app.aclose()

    try:
        rows = asyncio.run(_reachable(app, collect()))
    except RedisUnavailable as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps({"app": app.name, "queues": rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"aioq app {app.name!r} at {app.redis_url}")
    for column in ("queue", "queued", "running", "scheduled", "dead"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    for row in rows:
        table.add_row(*(str(row[c]) for c in ("queue", "queued", "running", "scheduled", "dead")))
    Console().print(table)


async def _reachable(app: App, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` after checking Redis answers, so a dead Redis is one clear line."""
    try:
        await app.ping()
    except RedisUnavailable:
        work.close()
        await app.aclose()
        raise
    return await work


@cli.command()
def demo(
    jobs: Annotated[int, typer.Option(help="how many example jobs to enqueue", min=1)] = 200,
    concurrency: Annotated[int, typer.Option(min=1)] = 50,
) -> None:
    """The quickstart: a private redis-server, a worker, example jobs, a live view."""
    from .demo import run_demo

    try:
        run_demo(jobs=jobs, concurrency=concurrency)
    except RedisServerNotFound as exc:
        raise fail(str(exc)) from None


def _logging(level: str) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise fail(f"unknown log level {level!r} (use debug, info, warning or error)")
    logging.basicConfig(
        level=numeric,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    os.environ.setdefault("PYTHONUNBUFFERED", "1")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
