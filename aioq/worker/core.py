"""``Worker``: starts the fetch, run, complete, lease and schedule loops, and stops them.

Stopping (``worker.stop()``, SIGTERM/SIGINT under the CLI, leaving ``async with``): fetching
stops at once, running jobs get ``shutdown_timeout`` seconds to finish, the rest are cancelled,
every outcome is written, and whatever this worker still holds is handed back to its stream at
once, so another worker starts it without waiting for the visibility timeout.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..app import App
from ..keys import QueueKeys
from ..loops import loop_name
from ..metrics import (
    JobObserver,
    JobSummary,
    Metrics,
    MetricsServer,
    QueueDepths,
    jobs_log,
    require_prometheus,
)
from ..scripts import WorkerArgs
from .broadcast import broadcast_queues, handed_loop
from .cancel import cancel_loop
from .complete import Completer
from .cron import cron_loop, served_schedules
from .fetch import fetch_loop
from .flows import HandOvers
from .heartbeat import PausedQueues, heartbeat_loop
from .lease import LeaseKeeper
from .recycle import memory_loop
from .run import Runner
from .schedule import promote_loop
from .slots import Slots

log = logging.getLogger("aioq.worker")


class Worker:
    """Runs an app's jobs in the current event loop.

    ``concurrency`` jobs run at once; ``queues`` defaults to every queue the app knows;
    ``burst`` stops the worker once every queue is empty and nothing scheduled is due;
    ``metrics_port`` serves Prometheus metrics on ``metrics_host:metrics_port`` (0: a free
    port, see ``metrics_address``; ``aioq/metrics.py``; needs the ``aioq[metrics]`` extra,
    else ``MissingMetricsExtra``, an ``ImportError``, names it); ``max_loop_block``: seconds
    the event loop may stay blocked (sync code in an async task) while this worker keeps its
    jobs' leases; a worker blocked longer counts as hung and its jobs go to other workers
    (``lease.py``). ``max_jobs`` and ``max_memory`` (MB of resident set) make the worker
    stop itself gracefully once it has taken that many jobs or grown that big, for a
    supervisor to replace it (``aioq worker --max-jobs-per-process``; ``recycle.py``):
    ``recycled`` then says why.
    """

    def __init__(
        self,
        app: App,
        concurrency: int = 100,
        queues: Iterable[str] | None = None,
        burst: bool = False,
        *,
        shutdown_timeout: float = 10.0,
        batch_size: int = 200,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        max_loop_block: float = 600.0,
        max_jobs: int | None = None,
        max_memory: float | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency!r}")
        if max_loop_block <= 0:
            raise ValueError(f"max_loop_block must be > 0 seconds, got {max_loop_block!r}")
        if max_jobs is not None and max_jobs < 1:
            raise ValueError(f"max_jobs must be >= 1, got {max_jobs!r}")
        if max_memory is not None and not max_memory > 0:
            raise ValueError(f"max_memory must be > 0 MB, got {max_memory!r}")
        self.max_loop_block = float(max_loop_block)
        self.max_jobs, self.max_memory = max_jobs, max_memory
        self.recycled: str | None = None  # why a limit stopped the worker (recycle.py)
        self._leases: LeaseKeeper | None = None
        self.app = app
        self.concurrency = concurrency
        names = list(queues) if queues is not None else app.queues
        if not names:
            raise ValueError("a worker needs at least one queue")
        self.queue_keys = [app.keys(q) for q in dict.fromkeys(names)]
        self.burst = burst
        self.shutdown_timeout = shutdown_timeout
        self.batch_size = max(1, batch_size)
        # Half the slots per fetch: the next batch's script runs in Redis while this one runs
        # in Python, so worker and Redis time overlap instead of adding up (no prefetch
        # beyond `concurrency` is needed for that).
        self.fetch_size = max(1, min(self.batch_size, (concurrency + 1) // 2))
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.script_args = WorkerArgs(
            self.consumer, app.max_deliveries, app.result_ttl, app.dead_letter_max
        )
        self.slots = Slots(concurrency)
        self.runner = Runner(self)
        self.handovers = HandOvers(self)
        self.completer = Completer(
            lambda: self.app.scripts, self.script_args, self._written, self.handovers.add
        )
        self.idle: set[QueueKeys] = set()
        self.paused = PausedQueues()  # queues held by `aioq pause` (heartbeat.py reads them)
        self.wake = asyncio.Event()
        self.jobs_done = 0
        self.started_at: float | None = None
        self._stop = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._main: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.metrics_port, self.metrics_host = metrics_port, metrics_host
        if metrics_port is not None:
            require_prometheus()  # the aioq[metrics] extra: say so now, not at start-up
        self.metrics: Metrics | None = None if metrics_port is None else Metrics()
        self.metrics_address: tuple[str, int] | None = None  # (host, port) once serving
        self._metrics_server: MetricsServer | None = None
        self._summary: JobSummary | None = None  # aioq.jobs at INFO: the periodic summary line

    def __repr__(self) -> str:
        queues = ",".join(k.queue for k in self.queue_keys)
        return f"<Worker {self.consumer} app={self.app.name!r} queues={queues}>"

    # -- lifecycle ------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to stop gracefully (safe to call from a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether ``stop()`` was called: fetchers take nothing more."""
        return self._stop.is_set()

    def recycle(self, reason: str) -> None:
        """Stop gracefully because a limit was reached (``max_jobs``, ``max_memory``)."""
        if self._stop.is_set():
            return  # stopping already (a signal, or a limit reached before)
        self.recycled = reason
        log.info("recycling: %s; taking no new jobs, stopping", reason)
        self.stop()

    async def run(self) -> None:
        """Run until ``stop()``, cancellation, or (burst) an empty queue; then drain."""
        await self._open()
        try:
            if self.burst:
                await self._until_drained()
            else:
                await self._stop.wait()
        finally:
            await asyncio.shield(self._close())

    async def __aenter__(self) -> Worker:
        self._main = asyncio.get_running_loop().create_task(self.run(), name="aioq-worker")
        ready = asyncio.ensure_future(self._ready.wait())
        await asyncio.wait({ready, self._main}, return_when=asyncio.FIRST_COMPLETED)
        if self._main.done():
            ready.cancel()
            await self._main  # raises the start-up error
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._main is not None:
            await self._main

    async def _open(self) -> None:
        # one round trip: Redis answers, every queue has its consumer group, scripts are loaded
        limits = {
            keys: {
                t.name: None if t.rate_limit is None else t.rate_limit.wire
                for t in self.app.tasks.values()
                if t.queue == keys.queue
            }
            for keys in self.queue_keys
        }
        # the key limits each task declares, for producers that enqueue it by name only
        key_limits = {
            keys: {
                t.name: t.key_limits or None
                for t in self.app.tasks.values()
                if t.queue == keys.queue
            }
            for keys in self.queue_keys
        }
        policy = await self.app._call(self.app.scripts.prepare(self.queue_keys, limits, key_limits))
        if policy is not None and policy != "noeviction":
            log.warning(
                "Redis evicts keys when full (maxmemory-policy %s): an evicted job record or "
                "stream is a lost job; set maxmemory-policy noeviction on the Redis aioq uses",
                policy,
            )
        self.runner.redis = self.app.redis
        await self._open_metrics()
        loop = asyncio.get_running_loop()
        spawn = loop.create_task
        # the completer and the heartbeat first: they stop last (_close)
        self._loops.append(spawn(self.completer.run(), name="aioq-complete"))
        self._loops.append(spawn(heartbeat_loop(self), name="aioq-heartbeat"))
        self._leases = LeaseKeeper(self)
        self._leases.start()
        self._loops.append(spawn(cancel_loop(self), name="aioq-cancel"))
        self._loops.append(spawn(self.handovers.run(), name="aioq-handover"))
        schedules = served_schedules(self)
        if schedules:
            self._loops.append(spawn(cron_loop(self, schedules), name="aioq-cron"))
        for keys in self.queue_keys:
            self._loops.append(spawn(promote_loop(self, keys), name=f"aioq-promote-{keys.queue}"))
        if self._summary is not None:
            self._loops.append(spawn(self._summary.run(), name="aioq-summary"))
        if self.max_memory is not None:
            self._loops.append(spawn(memory_loop(self, self.max_memory), name="aioq-memory"))
        self._fetchers = [
            spawn(fetch_loop(self, keys), name=f"aioq-fetch-{keys.queue}")
            for keys in self.queue_keys
        ]
        broadcasts = broadcast_queues(self)
        if broadcasts:  # stops with the fetchers: it starts jobs too
            self._fetchers.append(spawn(handed_loop(self, broadcasts), name="aioq-broadcast"))
        self.started_at = time.time()
        self._ready.set()
        log.info(
            "worker %s started: app %r, queues %s, concurrency %d, loop %s",
            self.consumer, self.app.name, [k.queue for k in self.queue_keys], self.concurrency,
            loop_name(loop),
        )  # fmt: skip

    async def _open_metrics(self) -> None:
        log_jobs = jobs_log.isEnabledFor(logging.DEBUG)  # a line per job start and finish
        if self.metrics is not None or log_jobs:  # else the runner has no observer: no cost
            self.runner.observer = JobObserver(self.metrics, log_jobs)
        if jobs_log.isEnabledFor(logging.INFO):
            self._summary = JobSummary(self)
        if self.metrics is not None and self.metrics_port is not None:
            depths = QueueDepths(self.app, [k.queue for k in self.queue_keys])
            self._metrics_server = MetricsServer(self.metrics, lambda: len(self.runner), depths)
            self.metrics_address = await self._metrics_server.start(
                self.metrics_host, self.metrics_port
            )
            log.info("metrics at http://%s:%d/metrics", *self.metrics_address)

    async def _until_drained(self) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(0.02)
            if (
                len(self.idle) < len(self.queue_keys)
                or len(self.runner)
                or len(self.completer)
                or len(self.handovers)
            ):
                continue
            moved = 0
            for keys in self.queue_keys:
                moved += (await self.app.scripts.promote(keys, self.app.result_ttl))[0]
            if moved:
                self.woken()
                continue
            if len(self.idle) == len(self.queue_keys) and not len(self.runner):
                return

    async def _close(self) -> None:
        await cancel_and_wait(self._fetchers)
        running = [t for r in self.runner.running.values() for t in r.values()]
        if running:
            log.info("waiting up to %gs for %d running job(s)", self.shutdown_timeout, len(running))
            _, pending = await asyncio.wait(running, timeout=self.shutdown_timeout)
            if pending:
                log.warning("handing back %d job(s) still running", len(pending))
                self.runner.interrupt_all()
                await asyncio.wait(pending, timeout=2.0)
        await cancel_and_wait(self._loops[2:])  # everything but the completer and the heartbeat
        await self._write_back()
        await self.handovers.close()
        if self._leases is not None:  # after the write-back: buffered outcomes are still ours
            await asyncio.to_thread(self._leases.stop)
            self._leases = None
        # the last beat counts the jobs the write-back finished in the throughput
        await cancel_and_wait(self._loops[:2])
        self._loops.clear()
        if self._metrics_server is not None:
            await self._metrics_server.close()
        if self._summary is not None:
            await self._summary.log(final=True)
        log.info("worker %s stopped after %d job(s)", self.consumer, self.jobs_done)

    async def _write_back(self) -> None:
        """Write every buffered outcome and hand back what is left, retrying for a while."""
        deadline = time.monotonic() + max(5.0, self.app.visibility_timeout)
        while True:
            try:
                await self.completer.flush()
                released = 0
                for keys in self.queue_keys:
                    released += await self.app.scripts.release_all(keys, self.consumer)
                if released:
                    log.info("handed %d job(s) back to their queue", released)
                return
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                if time.monotonic() > deadline:
                    log.error("could not write back before stopping (%s); leases will lapse", exc)
                    return
                await asyncio.sleep(0.2)

    # -- callbacks from the loops ---------------------------------------------------------

    def woken(self) -> None:
        """New work may be on a stream: wake burst-mode fetchers."""
        self.idle.clear()
        self.wake.set()

    def _written(self, n: int) -> None:
        self.jobs_done += n
        if self.burst:
            self.woken()

    @property
    def running(self) -> int:
        """How many jobs are running now."""
        return len(self.runner)

    def stats(self) -> dict[str, Any]:
        return {
            "consumer": self.consumer,
            "running": self.running,
            "done": self.jobs_done,
            "concurrency": self.concurrency,
        }


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel tasks and wait until they have ended, cancelling again while they run on.

    One ``cancel()`` is not always enough on Python 3.11: ``asyncio.wait_for`` (which redis-py
    uses to send commands) swallows a cancellation that arrives as its I/O completes (fixed in
    3.12), and a loop that lost its cancellation runs for ever, so stopping would hang.
    """
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.1)
