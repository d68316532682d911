"""``aioq worker``: its one parser (argparse) and running a worker from the command line.

``aioq worker`` is the command people restart most (deploys, autoscaling), so it does not go
through the CLI framework: importing typer (and rich, which it pulls in) would add tens of
milliseconds before the first job. ``aioq.cli.main`` hands ``aioq worker ...`` straight to
``main`` here; the typer app's ``worker`` command only forwards its arguments to the same
``main``, so the options are declared once, below, and ``aioq worker --help`` lists them all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Any

from ..embedded import EmbeddedRedis, RedisServerNotFound
from ..errors import RedisUnavailable
from ..loops import MissingUvloop, loop_factory
from ..metrics import MissingMetricsExtra, require_prometheus
from ..supervisor import RECYCLE, Supervisor, stop_with_supervisor, supervised
from ..worker import Worker
from .target import CliError, known_queues, load_app

# the embedded redis-server a supervisor started, for its children: it replaces the app's
# redis_url as --embedded-redis does in a worker on its own
EMBEDDED_URL_ENV = "AIOQ_SUPERVISOR_REDIS_URL"


def setup_logging(level: str, log_format: str = "text") -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise CliError(f"unknown log level {level!r} (use debug, info, warning or error)")
    if log_format not in ("text", "json"):
        raise CliError(f"unknown log format {log_format!r} (use text or json)")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        from ..logs import JsonFormatter

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
    loop: str = "asyncio",
    processes: int | None = None,
    max_jobs_per_process: int | None = None,
    max_memory_per_process: float | None = None,
) -> int:
    """Run a worker until SIGTERM/SIGINT (or, with ``burst``, until the queues are empty);
    with more than one process or a recycling limit, a supervisor of such workers
    (``aioq/supervisor.py``). Returns the exit code."""
    setup_logging(log_level, log_format)
    child = supervised()
    if child is not None:  # a process of a supervisor: it stops when the supervisor dies
        stop_with_supervisor(child)
    try:
        factory = loop_factory(loop)
    except (ValueError, MissingUvloop) as exc:
        raise CliError(str(exc)) from None
    _check(concurrency, metrics_port, processes, max_jobs_per_process, max_memory_per_process)
    app = load_app(target)
    if queues:
        known_queues(app, queues)
    recycling = max_jobs_per_process is not None or max_memory_per_process is not None
    if child is None and ((processes or 1) > 1 or recycling):
        if metrics_port is not None:
            try:
                require_prometheus()  # said once here, not by every process restarted
            except MissingMetricsExtra as exc:
                raise CliError(str(exc)) from None
        options = {
            "target": target, "concurrency": concurrency, "queues": queues, "burst": burst,
            "log_level": log_level, "log_format": log_format,
            "shutdown_timeout": shutdown_timeout, "metrics_port": metrics_port,
            "metrics_host": metrics_host, "loop": loop,
            "max_jobs_per_process": max_jobs_per_process,
            "max_memory_per_process": max_memory_per_process,
        }  # fmt: skip
        return _supervise(processes or 1, embedded_redis, options)
    with contextlib.ExitStack() as stack:
        if embedded_redis:
            app.rebind(redis_url=_embedded(stack))
        elif child is not None and os.environ.get(EMBEDDED_URL_ENV):
            app.rebind(redis_url=os.environ[EMBEDDED_URL_ENV])
        try:
            w = Worker(app, concurrency=concurrency, queues=queues or None, burst=burst,
                       shutdown_timeout=shutdown_timeout, metrics_port=metrics_port,
                       metrics_host=metrics_host, max_jobs=max_jobs_per_process,
                       max_memory=max_memory_per_process)  # fmt: skip
        except MissingMetricsExtra as exc:  # --metrics-port without aioq[metrics]
            raise CliError(str(exc)) from None
        try:
            with asyncio.Runner(loop_factory=factory) as runner:
                runner.run(_serve(w))
        except RedisUnavailable as exc:
            raise CliError(str(exc)) from None
        except OSError as exc:
            if w.metrics_port is None or w.metrics_address is not None:
                raise
            raise CliError(
                f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc}"
            ) from None
    return RECYCLE if w.recycled else 0


def _check(
    concurrency: int,
    metrics_port: int | None,
    processes: int | None,
    max_jobs: int | None,
    max_memory: float | None,
) -> None:
    if concurrency < 1:
        raise CliError(f"--concurrency must be at least 1, got {concurrency}")
    if metrics_port is not None and not 0 <= metrics_port <= 65535:
        raise CliError(f"--metrics-port must be 0-65535, got {metrics_port}")
    if processes is not None and processes < 1:
        raise CliError(f"--processes must be at least 1, got {processes}")
    if metrics_port and processes and metrics_port + processes - 1 > 65535:
        raise CliError(
            f"--metrics-port {metrics_port} with --processes {processes}: process k serves on "
            f"port {metrics_port} + k - 1, up to {metrics_port + processes - 1}, above 65535"
        )
    if max_jobs is not None and max_jobs < 1:
        raise CliError(f"--max-jobs-per-process must be at least 1, got {max_jobs}")
    if max_memory is not None and not max_memory > 0:
        raise CliError(f"--max-memory-per-process must be above 0 (MB), got {max_memory:g}")


def _embedded(stack: contextlib.ExitStack) -> str:
    """Start the embedded redis-server (stopped when ``stack`` closes); its URL."""
    try:
        server = stack.enter_context(EmbeddedRedis())
    except RedisServerNotFound as exc:
        raise CliError(str(exc)) from None
    print(
        f"aioq: embedded redis-server at {server.url} "
        "(new each start; its data goes when the worker stops)",
        file=sys.stderr,
        flush=True,
    )
    return server.url


def child_argv(options: dict[str, Any], number: int) -> list[str]:
    """The ``aioq worker`` arguments of process ``number`` (1..N) of a supervisor: its own
    options but --processes and --embedded-redis; process k serves metrics on the port
    --metrics-port + k - 1 (0: each a free port)."""
    o = options
    argv = [o["target"], "--concurrency", str(o["concurrency"])]
    for q in o["queues"] or ():
        argv += ["--queue", q]
    if o["burst"]:
        argv.append("--burst")
    argv += ["--log-level", o["log_level"], "--log-format", o["log_format"], "--loop", o["loop"]]
    argv += ["--shutdown-timeout", repr(o["shutdown_timeout"])]
    if o["metrics_port"] is not None:
        port = o["metrics_port"] and o["metrics_port"] + number - 1
        argv += ["--metrics-port", str(port), "--metrics-host", o["metrics_host"]]
    if o["max_jobs_per_process"] is not None:
        argv += ["--max-jobs-per-process", str(o["max_jobs_per_process"])]
    if o["max_memory_per_process"] is not None:
        argv += ["--max-memory-per-process", repr(o["max_memory_per_process"])]
    return argv


def _supervise(processes: int, embedded_redis: bool, options: dict[str, Any]) -> int:
    with contextlib.ExitStack() as stack:
        env = dict(os.environ)
        if embedded_redis:  # one server for every process
            env[EMBEDDED_URL_ENV] = _embedded(stack)

        def command(number: int) -> list[str]:
            return [sys.executable, "-m", "aioq", "worker", *child_argv(options, number)]

        return Supervisor(command, processes, burst=options["burst"], env=env).run()


async def _serve(w: Worker) -> None:
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        log = logging.getLogger("aioq.worker")
        if signals == 1:
            # said here, where the user is looking, because a stuck job otherwise holds the
            # terminal for the whole grace period with no hint that it can be cut short
            log.info(
                "stopping: giving running jobs up to %gs to finish; "
                "press Ctrl-C again (or send a second SIGTERM) to hand them back now",
                w.shutdown_timeout,
            )
            w.stop()
        else:  # a second signal: hand running jobs back now
            log.info("second signal: skipping the grace period, handing running jobs back now")
            w.shutdown_timeout = 0
            w.runner.interrupt_all()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        await w.run()
    finally:
        await w.app.aclose()


def parser() -> argparse.ArgumentParser:
    """The one parser of ``aioq worker`` (its ``--help`` too)."""
    p = argparse.ArgumentParser(
        prog="aioq worker",
        description="Run a worker until SIGTERM/SIGINT (or, with --burst, until the queues are "
        "empty).",
    )
    p.add_argument("target", metavar="MODULE:APP", help="the app to run, e.g. shop.tasks:app")
    p.add_argument(
        "--concurrency",
        "-c",
        type=int,
        default=100,
        metavar="N",
        help="jobs run at once (default 100)",
    )
    p.add_argument(
        "--queue",
        "-q",
        action="append",
        dest="queues",
        metavar="Q",
        help="queue to serve (repeatable; default: every queue of the app)",
    )
    p.add_argument(
        "--burst",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="exit once every queue is empty and nothing scheduled is due",
    )
    p.add_argument(
        "--log-level",
        default="info",
        metavar="LEVEL",
        help="debug, info, warning or error (default info)",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds running jobs get to finish on SIGTERM/SIGINT (default 10)",
    )
    p.add_argument(
        "--embedded-redis",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="try-out only: a private redis-server on a socket path new every start, whose "
        "data goes when the worker stops (`aioq redis`: a local one that keeps it)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics at :PORT/metrics (0: a free port)",
    )
    p.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address the metrics server binds (default 127.0.0.1)",
    )
    p.add_argument(
        "--log-format",
        default="text",
        metavar="FORMAT",
        help="text, or json: one object per line (default text)",
    )
    p.add_argument(
        "--loop",
        default="asyncio",
        metavar="LOOP",
        help="asyncio (default), uvloop (the aioq-redis[uvloop] extra), or auto: uvloop "
        "when it is installed, else asyncio",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=None,
        metavar="N",
        help="run N worker processes under a supervisor that restarts one that dies "
        "(default 1: this process is the worker)",
    )
    p.add_argument(
        "--max-jobs-per-process",
        type=int,
        default=None,
        metavar="M",
        help="replace a worker process after it has taken M jobs (implies a supervisor)",
    )
    p.add_argument(
        "--max-memory-per-process",
        type=float,
        default=None,
        metavar="MB",
        help="replace a worker process whose resident memory passes MB after a job "
        "(implies a supervisor)",
    )
    return p  # fmt: skip


def main(argv: list[str]) -> int:
    """``aioq worker ARGV``: returns the exit code."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # argparse printed the problem (exit 2) or the help (exit 0)
        return 2 if exc.code else 0
    try:
        return run(**vars(args))
    except CliError as exc:
        print(f"aioq: {exc}", file=sys.stderr)
        return 2
