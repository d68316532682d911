"""Broadcast copies handed to this worker (``aioq/broadcast.py``): take them and run them.

Another worker that reads the entry of a copy meant for this one hands it over
(``scripts/broadcast.lua``) and publishes on this worker's ``handed`` channel of the queue;
this loop, subscribed to it, takes what was handed (``scripts/take.lua``, each hand-over
once) and runs it at once, beside the worker's other jobs: the copy's lease began at the
hand-over, so it must not wait for a free slot (it holds one, over ``concurrency`` if need
be, while it runs). Every ``TAKE_EVERY`` seconds without a message it takes anyway, so a
message missed while the subscription reconnected costs at most that much. Only a worker
that serves a queue with broadcast tasks runs this loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from ..keys import QueueKeys
from ..results import subscribe_confirmed

if TYPE_CHECKING:
    from .core import Worker

log = logging.getLogger("aioq.worker")

TAKE_EVERY = 2.0
"""Seconds between two takes when no hand-over message arrives."""


def broadcast_queues(worker: Worker) -> list[QueueKeys]:
    """The worker's queues that some registered broadcast task goes to."""
    queues = {t.queue for t in worker.app.tasks.values() if t.broadcast}
    return [k for k in worker.queue_keys if k.queue in queues]


async def handed_loop(worker: Worker, queues: list[QueueKeys]) -> None:
    channels = {keys.handed(worker.consumer).encode(): keys for keys in queues}
    delay = 0.05
    while True:
        pubsub: Any = worker.app.redis.pubsub()
        try:
            await subscribe_confirmed(pubsub, list(channels))
            for keys in queues:  # handed before the subscription
                await _take(worker, keys)
            delay = 0.05
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=TAKE_EVERY)
                if msg is None:
                    for keys in queues:
                        await _take(worker, keys)
                elif msg.get("type") == "message" and msg["channel"] in channels:
                    await _take(worker, channels[msg["channel"]])
        except (RedisError, OSError) as exc:  # any: ending this loop would take nothing more
            log.debug("broadcast subscription lost (%s); reconnecting", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        finally:
            await pubsub.aclose()


async def _take(worker: Worker, keys: QueueKeys) -> None:
    runner, completer = worker.runner, worker.completer
    rows = await worker.app.scripts.take_handed(keys, worker.script_args)
    # a copy this worker runs or has yet to write already (its own reclaim found the entry
    # first, after a lost message) is not started twice
    fresh = [
        r
        for r in rows
        if r[0] not in runner.running.get(keys.levels[r[8]], {})
        and r[0] not in completer.pending(keys.levels[r[8]])
    ]
    if fresh:
        worker.slots.overdraw(len(fresh))  # given back one by one as each copy ends
        runner.start(keys, fresh)
        worker.woken()
