"""Leases: renewing our own running entries, and reclaiming entries whose lease lapsed.

A job is leased through its stream entry in the consumer group's pending-entries list: the
entry's idle time is the age of the lease. The renewer resets it (XCLAIM ... JUSTID, which
does not count a delivery) for every entry we still hold, three times per
``visibility_timeout``, so a live worker's entries never look idle for longer than a third of
it. Any worker's reclaimer (run by its fetcher, see ``Reclaimer``) takes over (XAUTOCLAIM)
only entries idle for a whole ``visibility_timeout``: their worker died, hung, or was frozen.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from ..keys import PRIORITIES, QueueKeys

if TYPE_CHECKING:
    from .core import Worker

log = logging.getLogger("aioq.worker")

# Any Redis error, not only a lost connection (e.g. NOGROUP after a restart, OOM, READONLY):
# a loop that let one through would end for good, silently, with the worker still up.
_ERRORS = (RedisError, OSError)


async def renew_loop(worker: Worker) -> None:
    interval = worker.app.visibility_timeout / 3
    while True:
        await asyncio.sleep(interval)
        for queue in worker.queue_keys:
            for keys in queue.lanes:  # one stream per priority
                try:
                    await renew(worker, keys)
                except _ERRORS as exc:
                    log.warning("renewing leases on %s failed (%s)", keys.stream, exc)


async def renew(worker: Worker, keys: QueueKeys) -> None:
    held = list(worker.runner.running.get(keys, {})) + worker.completer.pending(keys)
    for i in range(0, len(held), 1000):
        lost = await worker.app.scripts.renew(keys, worker.consumer, held[i : i + 1000])
        for entry_id in lost:
            if worker.runner.interrupt(keys, entry_id):
                log.warning(
                    "lease of entry %s on %s lapsed and was taken over; stopped running it",
                    entry_id.decode(), keys.queue,
                )  # fmt: skip


class Reclaimer:
    """Takes over one queue's entries whose lease lapsed (XAUTOCLAIM, idle > visibility_timeout).

    Called by the queue's fetcher rather than by a loop of its own: the fetcher reserves every
    free slot before it reads, and keeps them while parked on an empty queue, so a separate
    reclaim loop found no free slot whenever the worker was idle, and the jobs of a dead worker
    waited until new work happened to arrive. The fetcher spends its slots on lapsed leases
    first, every ``interval``, then on new entries.
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
        self.cursors, rows = await self.worker.app.scripts.reclaim(
            self.keys, self.worker.script_args, self.min_idle_ms, n, self.cursors
        )
        if rows:
            log.warning("took over %d job(s) on %s whose lease lapsed", len(rows), self.keys.queue)
        return rows
