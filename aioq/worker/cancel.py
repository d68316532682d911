"""Cancelling running jobs: ``job.cancel()`` publishes the job id on the queue's ``cancel``
channel; every worker serving the queue listens, and the one running it cancels the coroutine
(within a round trip, no polling). The job record also carries a ``cancel`` flag, checked
after every (re)subscription and by the completion and start scripts, so a signal missed
while disconnected still cancels the job. A subscription silent for ``KEEPALIVE`` is pinged,
so one whose connection stalled without closing is noticed and replaced."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from ..results import subscribe_confirmed

if TYPE_CHECKING:
    from .core import Worker

log = logging.getLogger("aioq.worker")

KEEPALIVE = 5.0
"""Seconds of silence after which the cancel subscription is pinged (and given up on, and
subscribed again, when the ping gets no answer in as long)."""


async def cancel_loop(worker: Worker) -> None:
    by_channel = {keys.cancel.encode(): keys for keys in worker.queue_keys}
    delay = 0.05
    while True:
        pubsub: Any = worker.app.redis.pubsub()
        try:
            await subscribe_confirmed(pubsub, list(by_channel))  # before the sweep reads
            await _sweep(worker)  # cancels published before the subscription
            delay = 0.05
            pinged = False
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=KEEPALIVE)
                if msg is None:
                    # A connection whose bytes stopped (a stalled link, a partition) looks idle
                    # for ever: ping it after a quiet spell, and start over when even that
                    # gets no answer (the sweep then finds what was missed).
                    if pinged:
                        raise RedisConnectionError(
                            f"cancel subscription silent for {2 * KEEPALIVE:g}s"
                        )
                    await pubsub.ping()
                    pinged = True
                    continue
                pinged = False
                if msg.get("type") != "message":
                    continue
                keys = by_channel.get(msg["channel"])
                if keys is not None:
                    job_id = msg["data"].decode(errors="replace")
                    if worker.runner.cancel_job(keys.queue, job_id):
                        log.info("job %s cancelled while running", job_id)
        except (RedisError, OSError) as exc:  # any: ending this loop would cancel nothing more
            log.debug("cancel subscription lost (%s); reconnecting", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        finally:
            await pubsub.aclose()


async def _sweep(worker: Worker) -> None:
    """Cancel running jobs whose record is flagged (their signal may have been missed)."""
    running = list(worker.runner.entries)
    if not running:
        return
    async with worker.app.redis.pipeline(transaction=False) as pipe:
        for queue, job_id in running:
            pipe.hget(worker.app.keys(queue).job(job_id), "cancel")
        flags = await pipe.execute()
    for (queue, job_id), flag in zip(running, flags, strict=True):
        if flag:
            worker.runner.cancel_job(queue, job_id)
