"""Running ``aioq worker`` without the CLI framework, so a worker starts fast.

``aioq worker`` is the command people restart most (deploys, autoscaling), and typer costs
about 0.1 s of imports before the first job (it builds pydantic validators for its options).
``aioq.cli.main`` hands ``aioq worker ...`` to ``main`` here, an argparse parser with the same
options as the typer command (``aioq worker --help`` still shows typer's help); a test keeps the
two in step. Everything the command does lives here; the typer command calls ``run``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import signal
import sys
from pathlib import Path

from .app import App
from .embedded import EmbeddedRedis, RedisServerNotFound
from .errors import RedisUnavailable
from .worker import Worker


class CliError(Exception):
    """A mistake the user can fix: printed as one line, exit code 2."""


def load_app(target: str) -> App:
    """Import ``module:attribute`` (the current directory is importable) and check it."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise CliError(f"expected MODULE:APP (e.g. myproject.tasks:app), got {target!r}")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise CliError(
            f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise CliError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(app, App):
        raise CliError(f"{target} is a {type(app).__name__}, not an aioq.App")
    return app


def setup_logging(level: str, log_format: str = "text") -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise CliError(f"unknown log level {level!r} (use debug, info, warning or error)")
    if log_format not in ("text", "json"):
        raise CliError(f"unknown log format {log_format!r} (use text or json)")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        from .logs import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=numeric, handlers=[handler])


def run(
    target: str,
    concurrency: int = 100,
    queues: list[str] | None = None,
    burst: bool = False,
    log_level: str = "info",
    shutdown_timeout: float = 10.0,
    embedded_redis: bool = False,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    log_format: str = "text",
) -> None:
    """Run a worker until SIGTERM/SIGINT (or, with ``burst``, until the queues are empty)."""
    setup_logging(log_level, log_format)
    if concurrency < 1:
        raise CliError(f"--concurrency must be at least 1, got {concurrency}")
    if metrics_port is not None and not 0 <= metrics_port <= 65535:
        raise CliError(f"--metrics-port must be 0-65535, got {metrics_port}")
    app = load_app(target)
    if queues:
        unknown = [q for q in queues if q not in app.queues]
        if unknown:
            raise CliError(
                f"unknown queue(s) {', '.join(map(repr, unknown))}: app {app.name!r} "
                f"has {', '.join(map(repr, app.queues))}"
            )
    with contextlib.ExitStack() as stack:
        if embedded_redis:
            try:
                server = stack.enter_context(EmbeddedRedis())
            except RedisServerNotFound as exc:
                raise CliError(str(exc)) from None
            app.redis_url = server.url
            print(f"aioq: embedded redis-server at {server.url}", file=sys.stderr, flush=True)
        w = Worker(app, concurrency=concurrency, queues=queues or None, burst=burst,
                   shutdown_timeout=shutdown_timeout, metrics_port=metrics_port,
                   metrics_host=metrics_host)  # fmt: skip
        try:
            asyncio.run(_serve(w))
        except RedisUnavailable as exc:
            raise CliError(str(exc)) from None
        except OSError as exc:
            if w.metrics_port is None or w.metrics_address is not None:
                raise
            raise CliError(
                f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc}"
            ) from None


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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aioq worker", add_help=False)
    p.add_argument("target")
    p.add_argument("--concurrency", "-c", type=int, default=100)
    p.add_argument("--queue", "-q", action="append", dest="queues")
    p.add_argument("--burst", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--log-level", default="info")
    p.add_argument("--shutdown-timeout", type=float, default=10.0)
    p.add_argument("--embedded-redis", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--metrics-port", type=int, default=None)
    p.add_argument("--metrics-host", default="127.0.0.1")
    p.add_argument("--log-format", default="text")
    return p


def main(argv: list[str]) -> int:
    """``aioq worker ARGV``: returns the exit code."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # argparse already printed the problem
        return 2 if exc.code else 0
    try:
        run(**vars(args))
    except CliError as exc:
        print(f"aioq: {exc}", file=sys.stderr)
        return 2
    return 0
