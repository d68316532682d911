"""Leases: renewing our own running entries, and reclaiming entries whose lease lapsed.

A job is leased through its stream entry in the consumer group's pending-entries list: the
entry's idle time is the age of the lease. The renewer resets it (XCLAIM ... JUSTID, which
does not count a delivery) for every entry we still hold, three times per
``visibility_timeout``, so a live worker's entries never look idle for longer than a third of
it. Any worker's reclaimer takes over (XAUTOCLAIM) only entries idle for a whole
``visibility_timeout``: their worker died, hung, or was frozen.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..keys import QueueKeys

if TYPE_CHECKING:
    from .core import Worker

log = logging.getLogger("aioq.worker")

_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


async def renew_loop(worker: Worker) -> None:
    interval = worker.app.visibility_timeout / 3
    while True:
        await asyncio.sleep(interval)
        for keys in worker.queue_keys:
            try:
                await renew(worker, keys)
            except _ERRORS as exc:
                log.warning("renewing leases on %s failed (%s)", keys.queue, exc)


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


async def reclaim_loop(worker: Worker, keys: QueueKeys) -> None:
    vt = worker.app.visibility_timeout
    interval = min(max(vt / 4, 0.2), 5.0)
    min_idle_ms = round(vt * 1000)
    cursor = b"0-0"
    while True:
        await asyncio.sleep(interval)
        n = worker.slots.take_nowait(worker.batch_size)
        if not n:
            continue
        started = 0
        try:
            cursor, rows = await worker.app.scripts.reclaim(
                keys, worker.script_args, min_idle_ms, n, cursor
            )
            if rows:
                log.warning("took over %d job(s) on %s whose lease lapsed", len(rows), keys.queue)
                started = len(rows)
                worker.runner.start(keys, rows)
        except _ERRORS as exc:
            log.warning("reclaiming on %s failed (%s)", keys.queue, exc)
        finally:
            worker.slots.give(n - started)
