"""Leases: renewing our own running entries, and reclaiming entries whose lease lapsed.

A job is leased through its stream entry in the consumer group's pending-entries list: the
entry's idle time is the age of the lease. ``LeaseKeeper`` resets it (XCLAIM ... JUSTID, which
does not count a delivery) for every entry we still hold, three times per
``visibility_timeout``, so a live worker's entries never look idle for longer than a third of
it. Any worker's reclaimer (run by its fetcher, see ``Reclaimer``) takes over (XAUTOCLAIM)
only entries idle for a whole ``visibility_timeout``: their worker died, hung, or was frozen.

The renewals run in a thread with its own Redis connection, not in the event loop: a task that
blocks the loop (a sync HTTP call or a CPU-heavy step inside ``async def``, a long GC pause)
would otherwise stop every renewal of the worker, and after ``visibility_timeout`` another
worker would start the same jobs again, and again, until they were poison. The thread goes on
renewing while the loop is blocked for up to ``max_loop_block`` seconds (a live process whose
loop comes back); past that the worker counts as hung and the thread stops renewing, so its jobs
go to other workers one ``visibility_timeout`` later. A frozen or dead process renews nothing,
so its leases lapse as before. A loop blocked longer than ``BLOCK_WARNING`` is logged once per
stall, naming the job whose code is blocking it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from ..connection import sync_client
from ..keys import GROUP, PRIORITIES, QueueKeys
from ..scripts import RENEW

if TYPE_CHECKING:
    from .core import Worker

log = logging.getLogger("aioq.worker")

BLOCK_WARNING = 1.0
"""Seconds the event loop may be blocked before the worker logs a warning naming the job."""

TICK = 0.25
"""How often the lease thread checks that the event loop still runs (seconds)."""

RENEW_CHUNK = 1000  # entry ids per RENEW call


class LeaseKeeper:
    """Renews the worker's leases from a thread a blocked event loop cannot stop."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.interval = worker.app.visibility_timeout / 3
        self.max_loop_block = worker.max_loop_block
        self._loop = asyncio.get_running_loop()
        self._last_tick = time.monotonic()  # when the loop last ran our tick (loop-written)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aioq-lease", daemon=True)
        # its own connection: the loop's are asyncio objects, and may be busy or stalled
        timeout = max(1.0, min(self.interval, 10.0))
        self._redis = sync_client(
            worker.app.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._renew = self._redis.register_script(RENEW)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 15)
        self._redis.close()

    # -- in the event loop -----------------------------------------------------------------

    def _tick(self) -> None:
        self._last_tick = time.monotonic()

    def _lost(self, keys: QueueKeys, entry_ids: Sequence[bytes]) -> None:
        for entry_id in entry_ids:
            if self.worker.runner.interrupt(keys, entry_id):
                log.warning(
                    "lease of entry %s on %s lapsed and was taken over; stopped running it",
                    entry_id.decode(), keys.queue,
                )  # fmt: skip

    # -- in the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        next_renewal = time.monotonic() + self.interval
        stalled_since: float | None = None  # the start of the stall being reported
        gave_up = False
        while not self._stop.wait(TICK):
            try:
                self._loop.call_soon_threadsafe(self._tick)
            except RuntimeError:  # the loop is closed: nothing left to renew for
                return
            now = time.monotonic()
            blocked = now - self._last_tick - TICK  # a tick is due every TICK when it runs
            if blocked > BLOCK_WARNING and stalled_since is None:
                stalled_since = self._last_tick
                log.warning(
                    "event loop blocked for %.1fs so far by %s: sync code in an async task "
                    "stops every other job of this worker (run it in a thread, or make it a "
                    "def task); leases are kept for up to %gs of blocking",
                    blocked, self._culprit(), self.max_loop_block,
                )  # fmt: skip
            elif blocked < TICK and stalled_since is not None:  # its ticks run on time again
                log.warning("event loop ran again after %.1fs", now - stalled_since - TICK)
                stalled_since, gave_up = None, False
            if now < next_renewal:
                continue
            if blocked > self.max_loop_block:
                if not gave_up:
                    gave_up = True
                    log.error(
                        "event loop blocked for %.0fs (more than max_loop_block=%gs): the "
                        "worker counts as hung, its leases are no longer renewed and its jobs "
                        "go to other workers", blocked, self.max_loop_block,
                    )  # fmt: skip
                next_renewal = now + self.interval
                continue
            try:
                self._renew_all()
                next_renewal = now + self.interval
            except (RedisError, OSError) as exc:
                log.warning("renewing leases failed (%s); retrying", exc)
                next_renewal = now + min(self.interval, 1.0)

    def _renew_all(self) -> None:
        runner, consumer = self.worker.runner, self.worker.consumer
        # copies made in one C call each (atomic under the GIL) while the loop mutates them
        for keys, running in list(runner.running.items()):
            held = list(running) + self.worker.completer.pending(keys)
            for i in range(0, len(held), RENEW_CHUNK):
                chunk = held[i : i + RENEW_CHUNK]
                lost = self._renew(keys=[keys.stream], args=[GROUP, consumer, *chunk])
                if lost:
                    try:
                        self._loop.call_soon_threadsafe(self._lost, keys, lost)
                    except RuntimeError:
                        return

    def _culprit(self) -> str:
        """The job whose code runs in the event loop now (what blocks it), as a phrase."""
        task = asyncio.current_task(self._loop)
        if task is None:
            return "a callback outside any task"
        runner = self.worker.runner
        for (queue, job_id), (keys, entry_id) in list(runner.entries.items()):
            if runner.running.get(keys, {}).get(entry_id) is task:
                name: Any = None
                # the thread's own connection: the loop cannot answer now
                with contextlib.suppress(RedisError, OSError):
                    name = self._redis.hget(keys.job(job_id), "task")
                what = f"task {name.decode(errors='replace')!r}, " if name else ""
                return f"job {job_id} ({what}queue {queue!r})"
        return f"asyncio task {task.get_name()!r}"


def holding(worker: Worker, keys: QueueKeys) -> set[tuple[int, bytes]]:
    """(priority, entry id) of every job of the queue this worker runs or has yet to write:
    taken before asking Redis what it holds, for ``orphans``."""
    runner, completer = worker.runner, worker.completer
    held: set[tuple[int, bytes]] = set()
    for level in keys.levels:
        held.update((level.priority, e) for e in runner.running.get(level, ()))
        held.update((level.priority, e) for e in completer.pending(level))
    return held


def orphans(
    worker: Worker, keys: QueueKeys, rows: list[Any], before: set[tuple[int, bytes]]
) -> list[Any]:
    """Of started-job rows that Redis says this worker holds, those whose start reply never
    reached the worker: neither running nor waiting to be written now, nor when the question
    was sent (``before``, from ``holding``). A job that ran then may have finished while the
    answer travelled (Redis read its record before its outcome landed): it is no orphan."""
    runner, completer = worker.runner, worker.completer
    out = []
    for row in rows:
        level = keys.levels[row[8]]
        if (row[8], row[0]) in before:
            continue
        if row[0] in runner.running.get(level, {}) or row[0] in completer.pending(level):
            continue
        out.append(row)
    if out:
        log.warning(
            "running %d job(s) on %s whose start reply was lost", len(out), keys.queue
        )  # fmt: skip
    return out


class Reclaimer:
    """Takes over one queue's entries whose lease lapsed (XAUTOCLAIM, idle > visibility_timeout).

    Called by the queue's fetcher rather than by a loop of its own: the fetcher reserves every
    free slot before it reads, and keeps them while parked on an empty queue, so a separate
    reclaim loop found no free slot whenever the worker was idle, and the jobs of a dead worker
    waited until new work happened to arrive. The fetcher spends its slots on lapsed leases
    first, every ``interval``, then on new entries.

    XAUTOCLAIM also matches this worker's own idle entries; RECLAIM never restarts those (a
    second copy of a running job), and only the ones this worker does not run (``orphans``)
    are started here.
    """

    def __init__(self, worker: Worker, keys: QueueKeys) -> None:
        vt = worker.app.visibility_timeout
        self.worker = worker
        self.keys = keys
        self.interval = min(max(vt / 4, 0.2), 5.0)
        self.min_idle_ms = round(vt * 1000)
        self.cursors = [b"0-0"] * PRIORITIES  # where each priority's stream scan goes on
        self._clock = asyncio.get_running_loop().time
        self._next = self._clock()  # due at once: a (re)started worker takes over what lapsed

    def due_in(self) -> float:
        """Seconds until the next reclaim is due (<= 0: now)."""
        return self._next - self._clock()

    async def reclaim(self, n: int) -> list[Any]:
        """Start up to ``n`` lapsed jobs (as the fetch script would) if a reclaim is due."""
        if self.due_in() > 0:
            return []
        self._next = self._clock() + self.interval
        before = holding(self.worker, self.keys)
        self.cursors, rows, held = await self.worker.app.scripts.reclaim(
            self.keys, self.worker.script_args, self.min_idle_ms, n, self.cursors
        )
        if rows:
            log.warning("took over %d job(s) on %s whose lease lapsed", len(rows), self.keys.queue)
        return rows + orphans(self.worker, self.keys, held, before) if held else rows
