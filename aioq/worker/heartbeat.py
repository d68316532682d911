"""Heartbeat: the worker's stats for ``aioq info``, and the queues ``aioq pause`` holds.

Every ``HEARTBEAT`` seconds the worker writes its stats (JSON: consumer, host, pid, queues,
concurrency, running, done, started_at, uptime) under its consumer name in the app's
``workers`` hash (``keys.workers_key``), stamped by the script with Redis' clock, so readers
judge staleness on one clock whatever the workers' clocks say. ``aioq info`` treats an entry
that has not beaten for ``STALE_AFTER`` seconds as a dead worker and prunes it; a clean stop
removes it at once. The whole hash expires when no worker of the app beats any more. Each beat
(the last one too, after the stopping worker's final results are written) also adds the jobs
finished since the previous beat to the app's throughput hash (``keys.throughput_key``, see
``scripts/heartbeat.lua``), which ``views.throughput`` reads.

Every ``PAUSE_POLL`` seconds the same loop reads the paused flags of the worker's queues into
``worker.paused``; a fetcher checks that set (no I/O) before each batch and takes nothing new
from a paused queue, while running jobs finish. A pause therefore takes effect within
``PAUSE_POLL`` plus one parked fetch (``fetch.BLOCK_MS``, at most 2 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import orjson
from redis.exceptions import RedisError

from ..keys import QueueKeys, throughput_key, workers_key
from ..supervisor import process_identity

if TYPE_CHECKING:
    from .core import Worker

log = logging.getLogger("aioq.worker")

HEARTBEAT = 2.0  # seconds between two heartbeats
STALE_AFTER = 3 * HEARTBEAT  # a worker silent this long is dead (aioq info prunes it)
PAUSE_POLL = 0.5  # seconds between two reads of the paused flags
HASH_TTL = 60  # seconds the workers hash outlives the last heartbeat of any worker


class PausedQueues:
    """The queues paused by ``aioq pause``, as the worker last read them.

    Until the first read every queue counts as paused, so a worker started on a paused queue
    takes nothing from it (its fetchers wait one round trip at start-up).
    """

    def __init__(self) -> None:
        self._names: frozenset[str] = frozenset()
        self._known = False
        self._changed = asyncio.Event()

    def __contains__(self, queue: object) -> bool:
        return not self._known or queue in self._names

    @property
    def known(self) -> bool:
        """Whether the flags have been read at least once."""
        return self._known

    @property
    def names(self) -> list[str]:
        return sorted(self._names)

    def update(self, names: Iterable[str]) -> None:
        names = frozenset(names)
        if self._known and names == self._names:
            return
        added, removed = names - self._names, self._names - names
        if added:
            log.info("queue(s) %s paused: taking no new jobs from them", sorted(added))
        if removed:
            log.info("queue(s) %s resumed", sorted(removed))
        self._names, self._known = names, True
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_resumed(self, worker: Worker, keys: QueueKeys) -> None:
        """Wait while ``keys``' queue is paused. A burst worker counts a paused queue as idle
        (it has nothing to take), so it may exit leaving the queue's jobs for later."""
        while keys.queue in self:
            if self._known:  # before the first read nothing is known: not idle (burst exit)
                worker.idle.add(keys)  # woken() clears it: a burst worker re-checks every 50 ms
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05 if worker.burst else None):
                    await changed.wait()


async def heartbeat_loop(worker: Worker) -> None:
    """Beat every ``HEARTBEAT`` s and read the paused flags every ``PAUSE_POLL`` s until
    cancelled; then the last beat removes the worker's entry (a clean stop)."""
    keys = (workers_key(worker.app.name), throughput_key(worker.app.name))
    identity = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "queues": [k.queue for k in worker.queue_keys],
        "started_at": time.time(),
        **process_identity(),  # under `aioq worker --processes N`: supervisor pid, number
    }
    began = time.monotonic()  # uptime from the monotonic clock: immune to clock changes
    next_beat = 0.0
    reported = 0  # the worker's finished jobs as of its last acknowledged beat
    try:
        while True:
            try:
                await _read_paused(worker)
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + HEARTBEAT
                    stats = {**worker.stats(), **identity, "uptime": time.monotonic() - began}
                    done = int(stats["done"])
                    await worker.app.scripts.heartbeat(
                        keys, worker.consumer, orjson.dumps(stats), HASH_TTL, done, reported
                    )
                    reported = done
            except (RedisError, OSError) as exc:  # any: ending this loop would beat no more
                log.debug("heartbeat failed (%s)", exc)
                if not worker.paused.known:  # never read: take jobs rather than wait for ever
                    worker.paused.update(())
            await asyncio.sleep(PAUSE_POLL)
    except asyncio.CancelledError:
        # the worker is stopping: remove the entry even while cancellations keep arriving
        # (cancel_and_wait repeats them), within a bounded time
        removal = asyncio.ensure_future(_remove(worker, keys, reported))
        while not removal.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(removal)
        raise


async def _read_paused(worker: Worker) -> None:
    async with worker.app.redis.pipeline(transaction=False) as pipe:
        for keys in worker.queue_keys:
            pipe.exists(keys.paused)
        flags = await pipe.execute()
    worker.paused.update(k.queue for k, flag in zip(worker.queue_keys, flags, strict=True) if flag)


async def _remove(worker: Worker, keys: tuple[str, str], reported: int) -> None:
    """The last beat: count the jobs finished since the previous one, remove the entry."""
    with contextlib.suppress(RedisError, OSError, TimeoutError):
        async with asyncio.timeout(2.0):
            await worker.app.scripts.heartbeat(
                keys, worker.consumer, b"", HASH_TTL, worker.jobs_done, reported
            )
