"""Fetching: one XREADGROUP per batch, sized to the free slots.

With a backlog, the ``fetch`` script reads and starts a whole batch in one round trip. When the
queue is empty the fetcher parks in a blocking XREADGROUP (no polling) and starts what it
delivers with the ``start`` script.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..keys import GROUP, QueueKeys

if TYPE_CHECKING:
    from .core import Worker

log = logging.getLogger("aioq.worker")

BLOCK_MS = 2_000  # a parked fetcher wakes this often to notice new queues or a stop


async def fetch_loop(worker: Worker, keys: QueueKeys) -> None:
    slots, runner = worker.slots, worker.runner
    delay = 0.05
    while True:
        n = await slots.take(worker.batch_size)
        started = 0
        try:
            rows = await worker.app.scripts.fetch(keys, worker.script_args, n)
            if not rows:
                worker.idle.add(keys)
                if worker.burst:
                    slots.give(n)
                    n = 0
                    await worker.wake.wait()
                    worker.wake.clear()
                    continue
                rows = await _wait_for_entries(worker, keys, n)
            worker.idle.discard(keys)
            started = len(rows)
            runner.start(keys, rows)
            delay = 0.05
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            log.warning("fetching from %s failed (%s); retrying in %.2fs", keys.queue, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        finally:
            slots.give(n - started)


async def _wait_for_entries(worker: Worker, keys: QueueKeys, n: int) -> list[Any]:
    redis = worker.app.redis
    try:
        reply: Any = await redis.xreadgroup(
            GROUP, worker.consumer, {keys.stream: ">"}, count=n, block=BLOCK_MS
        )
    except ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
        return []  # the next fetch script recreates the group
    if not reply:
        return []
    entry_ids = [eid for eid, _ in reply[0][1]]
    return await worker.app.scripts.start(keys, worker.script_args, entry_ids)
