"""Promoting due scheduled jobs (delays, retry backoff) onto their stream."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from ..keys import QueueKeys

if TYPE_CHECKING:
    from .core import Worker

log = logging.getLogger("aioq.worker")

MAX_SLEEP = 0.1  # a newly scheduled job is promoted at most this late
BATCH = 1000


async def promote_loop(worker: Worker, keys: QueueKeys) -> None:
    delay = 0.05
    while True:
        try:
            moved, next_due, now = await worker.app.scripts.promote(
                keys, worker.app.result_ttl, BATCH
            )
        except (RedisError, OSError) as exc:  # any: ending this loop would promote nothing more
            log.warning("promoting scheduled jobs on %s failed (%s)", keys.queue, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            continue
        delay = 0.05
        if moved:
            worker.woken()
        if moved >= BATCH:
            continue
        if next_due < 0:
            await asyncio.sleep(MAX_SLEEP)
        else:
            await asyncio.sleep(min(max((next_due - now) / 1000, 0.001), MAX_SLEEP))
