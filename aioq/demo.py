"""``aioq demo``: the whole loop on one machine, in a few seconds.

A private redis-server (unix socket, temp dir), a worker in the same event loop, the web
dashboard of that app on 127.0.0.1 (when its extra is installed), a batch of example jobs (some
slow, some failing then retrying, one failing for good), a progress bar, and a table of
outcomes. With ``keep`` the worker, Redis and dashboard stay up after the batch, fed a trickle
of example jobs, until SIGINT/SIGTERM; then everything stops and the temp dir is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shlex
import shutil
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Iterator
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .app import App
from .context import current_job
from .embedded import EmbeddedRedis
from .errors import TaskFailed
from .job import Job
from .task import Call
from .worker import Worker

HOST = "127.0.0.1"  # the dashboard has no authentication: never bind anything wider
TRICKLE_RATE = 10.0  # example jobs per second after the batch, with keep
TRICKLE_TICK = 0.5  # seconds between the trickle's small bulk enqueues


class DemoError(Exception):
    """A problem the user can fix (a ``--port`` in use): one line, exit code 2."""


def build_app(redis_url: str | None = None) -> App:
    # finished jobs are kept an hour (not a day): a demo left running with keep stays small
    app = App("demo", redis_url=redis_url, result_ttl=3600)

    @app.task
    async def resize_image(image_id: int, width: int) -> dict[str, int]:
        await asyncio.sleep(random.uniform(0.01, 0.2))  # stands for real I/O
        return {"image": image_id, "width": width}

    @app.task(retries=2, backoff=0.05, priority=5)  # payments first: see the Priority column
    async def charge_card(order_id: int) -> str:
        if current_job().attempt == 1 and order_id % 7 == 0:
            raise ConnectionError(f"payment gateway timed out for order {order_id}")
        return f"charged order {order_id} on attempt {current_job().attempt}"

    @app.task
    async def send_email(to: str) -> None:
        if to.endswith(".invalid"):
            raise ValueError(f"cannot deliver to {to}")
        await asyncio.sleep(0.01)

    @app.task
    def checksum(data: str) -> int:  # a sync task: runs in a worker thread
        return sum(data.encode()) % 65_521

    return app


# The target of the `aioq info` line the demo prints: the same app, its Redis from
# $AIOQ_REDIS_URL (the line sets it to the running demo's socket). Building it does no I/O.
app = build_app()


def example_call(app: App, i: int, delay: float | None = None) -> Call[Any]:
    """The ``i``-th example job: every 7th charge fails once, every 50th email for good."""
    kind, t = i % 4, app.tasks
    name, args = (
        ("resize_image", (i, 640)),
        ("charge_card", (i,)),
        ("send_email", (f"user{i}@example.invalid" if i % 50 == 2 else f"user{i}@example.com",)),
        ("checksum", (f"payload-{i}",)),
    )[kind]
    task = t[name] if delay is None else t[name].options(delay=delay)
    return task.call(*args)


class DashboardServer:
    """The dashboard of the demo's app, served by uvicorn in the demo's own event loop.

    ``bind`` takes the port before anything starts, so a ``--port`` in use fails at once; the
    dashboard and uvicorn are imported only then, so no other command pays for them.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}/"
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def bind(cls, port: int, console: Console) -> DashboardServer | None:
        """A server bound to 127.0.0.1:``port`` (0: a free one), or None after one line saying
        why when the dashboard's dependencies are missing."""
        try:
            import uvicorn  # noqa: F401

            from .dashboard import dashboard  # noqa: F401
        except ImportError as exc:
            missing = (exc.name or "starlette").split(".")[0]
            console.print(
                f"no dashboard: it needs {missing} (pip install 'aioq-redis[dashboard]'); "
                "going on without it",
                markup=False,
                soft_wrap=True,
            )
            return None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            sock.close()
            raise DemoError(f"cannot serve the dashboard on {HOST}:{port}: {exc}") from None
        return cls(sock)

    async def start(self, app: App) -> None:
        import uvicorn

        from .dashboard import dashboard

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield  # the demo handles SIGINT/SIGTERM itself, then stops this server

        config = uvicorn.Config(
            dashboard(app), log_level="warning", lifespan="off", ws="none",
            timeout_graceful_shutdown=2,
        )  # fmt: skip
        self._server = server = Server(config)
        self._task = task = asyncio.create_task(server.serve(sockets=[self.sock]))
        while not server.started:
            if task.done():
                await task  # raises what stopped it
                raise DemoError(f"the dashboard did not start on {self.url}")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._server.should_exit = True  # uvicorn closes open connections within 2 s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._task, 10)  # cancelled if it hangs past that
        self.sock.close()


def aioq_program() -> str:
    """How the user's shell runs this same ``aioq``: plain ``aioq`` when PATH finds it, else
    its full path (``./scripts/demo`` runs ``.venv/bin/aioq``), or ``python -m aioq``."""
    script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if os.path.basename(script) == "aioq" and os.access(script, os.X_OK):
        found = shutil.which("aioq")
        if found and os.path.samefile(found, script):
            return "aioq"
        return shlex.quote(script)
    return f"{shlex.quote(sys.executable)} -m aioq"


def info_command(redis_url: str) -> str:
    """The shell command that shows ``aioq info`` of the demo's app while the demo runs."""
    return f"AIOQ_REDIS_URL={shlex.quote(redis_url)} {aioq_program()} info aioq.demo:app"


async def _unless_stopped(work: Awaitable[Any], stop: asyncio.Event) -> bool:
    """Await ``work``, or cancel it when ``stop`` is set first; True when it finished."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if task.done():
        task.result()
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False


async def _batch(app: App, jobs: int, stop: asyncio.Event, console: Console) -> None:
    calls = [example_call(app, i) for i in range(jobs)]
    started = time.perf_counter()
    enqueued: list[Job[Any]] = await app.enqueue_many(calls)
    console.print(f"enqueued {len(enqueued)} jobs in one pipelined round trip")
    outcomes: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], str] = {}
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("running jobs", total=len(enqueued))

        async def wait(job: Job[Any], task: str) -> None:
            try:
                value = await job.result(timeout=60)
                key = (task, "succeeded")
                examples.setdefault(key, repr(value))
            except TaskFailed as exc:
                key = (task, f"failed: {exc.exc_type}")
                examples.setdefault(key, str(exc))
            outcomes[key] += 1
            progress.advance(bar)

        waits = (wait(j, c.task.name) for j, c in zip(enqueued, calls, strict=True))
        finished = await _unless_stopped(asyncio.gather(*waits), stop)
    elapsed = time.perf_counter() - started
    if not finished:
        console.print(f"interrupted: {outcomes.total()} of {jobs} jobs had finished")
        return
    retried = 0
    for job in enqueued[1::4]:
        retried += (await job.info()).attempts > 1
    table = Table(title=f"{jobs} jobs in {elapsed:.2f}s")
    table.add_column("task")
    table.add_column("outcome")
    table.add_column("jobs", justify="right")
    table.add_column("example")
    for (task, outcome), n in sorted(outcomes.items()):
        style = "green" if outcome == "succeeded" else "red"
        table.add_row(task, f"[{style}]{outcome}[/]", str(n), examples[(task, outcome)][:60])
    console.print(table)
    console.print(f"{retried} charge_card jobs failed once and succeeded on a retry.")


async def _trickle(app: App, first: int, stop: asyncio.Event, console: Console) -> int:
    """Enqueue example jobs, about TRICKLE_RATE a second in small bulks of varying size (one
    in ten delayed a few seconds), until ``stop``; returns how many."""
    i = first
    per_tick = max(1, round(TRICKLE_RATE * TRICKLE_TICK))
    with console.status("trickling jobs") as status:
        while not stop.is_set():
            n = random.randint(1, 2 * per_tick - 1)
            delays = [random.uniform(1, 5) if random.random() < 0.1 else None for _ in range(n)]
            await app.enqueue_many([example_call(app, i + k, d) for k, d in enumerate(delays)])
            i += n
            status.update(f"{i - first} jobs enqueued since the batch; Ctrl-C stops the demo")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TRICKLE_TICK)
    return i - first


async def _run(
    redis_url: str,
    jobs: int,
    concurrency: int,
    keep: bool,
    dash: DashboardServer | None,
    console: Console,
) -> None:
    app = build_app(redis_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Ctrl-C, SIGTERM or a closed terminal: stop cleanly, redis-server included
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    info = info_command(redis_url)
    try:
        if dash is not None:
            await dash.start(app)
        async with Worker(app, concurrency=concurrency, shutdown_timeout=2.0) as worker:
            console.print(
                f"[bold]aioq demo[/] - worker [cyan]{escape(worker.consumer)}[/], "
                f"concurrency {concurrency}, Redis at [cyan]{escape(redis_url)}[/]",
                soft_wrap=True,
            )
            if dash is not None:
                console.print(f"dashboard: [cyan]{dash.url}[/]", soft_wrap=True, highlight=False)
            console.print(f"aioq info: [cyan]{escape(info)}[/]", soft_wrap=True, highlight=False)
            await _batch(app, jobs, stop, console)
            if keep and not stop.is_set():
                console.print(
                    f"Kept up until Ctrl-C or SIGTERM: the worker, Redis"
                    f"{' and the dashboard' if dash else ''}, with about {TRICKLE_RATE:g} "
                    "example jobs a second.",
                    soft_wrap=True,
                )
                if dash is not None:
                    console.print(f"  watch   [cyan]{dash.url}[/]", soft_wrap=True, highlight=False)
                console.print(f"  or run  [cyan]{escape(info)}[/]", soft_wrap=True, highlight=False)
                n = await _trickle(app, jobs, stop, console)
                console.print(f"stopping: {n} jobs were enqueued after the batch")
    finally:
        if dash is not None:
            await dash.stop()
        await app.aclose()
    if not keep:
        console.print(
            "The dashboard, worker and Redis stop with the demo: [bold]aioq demo --keep[/] "
            "keeps them up, with a trickle of jobs, until Ctrl-C.\n"
            "Next: run your own worker with [bold]aioq worker yourapp.tasks:app[/] "
            "(see README.md), or [bold]aioq worker --embedded-redis[/] to try it without a "
            "Redis (a throw-away one: its jobs go when the worker stops); watch it with "
            "[bold]aioq info yourapp.tasks:app[/] or "
            "[bold]aioq dashboard yourapp.tasks:app --port 8000[/]."
        )


def run_demo(jobs: int = 200, concurrency: int = 50, port: int = 0, keep: bool = False) -> None:
    """Run the demo; ``port`` is the dashboard's (0: a free one), ``keep`` keeps everything up
    with a trickle of jobs until SIGINT/SIGTERM. Raises ``DemoError`` when the port is taken."""
    console = Console()
    dash = DashboardServer.bind(port, console)
    try:
        with EmbeddedRedis() as server:
            asyncio.run(_run(server.url, jobs, concurrency, keep, dash, console))
    finally:
        if dash is not None:
            dash.sock.close()
    if keep:
        console.print("stopped: the worker, the dashboard and redis-server are gone")
