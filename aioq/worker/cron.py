"""Firing cron ticks (schedules from ``@app.cron``; tick arithmetic in ``aioq/cron.py``).

Every worker serving a cron task's queue runs this loop; the ``cron`` script makes each tick
fire once however many of them race. Clocks: ticks are compared with Redis' clock (the offset
to it is measured at start and every minute), so a worker with a skewed clock neither fires
early nor late.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from ..cron import CronSchedule
from ..task import Call, Options
from ..tracing import publish

if TYPE_CHECKING:
    from .core import Worker

log = logging.getLogger("aioq.worker")

MAX_SLEEP = 1.0  # re-check at least this often (new offsets, state moved by other workers)


def served_schedules(worker: Worker) -> list[CronSchedule]:
    """The app's cron schedules whose task is on a queue this worker serves."""
    served = {k.queue for k in worker.queue_keys}
    return [s for s in worker.app.crons if worker.app.tasks[s.task].queue in served]


async def cron_loop(worker: Worker, schedules: list[CronSchedule]) -> None:
    last: dict[str, float | None] = {}
    offset, measured = 0.0, -1e9
    delay = 0.05
    while True:
        try:
            if time.monotonic() - measured > 60:
                offset, measured = await _redis_offset(worker), time.monotonic()
            if not last:
                last = await _load_state(worker, schedules)
            now = time.time() + offset
            for s in schedules:
                await _fire_due(worker, s, last, now)
            delay = 0.05
            now = time.time() + offset
            wait = min(s.next_after(now) for s in schedules) - now
            await asyncio.sleep(min(max(wait, 0.001), MAX_SLEEP))
        except (RedisError, OSError) as exc:  # any: ending this loop would fire nothing more
            log.warning("firing cron ticks failed (%s); retrying in %.2fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def _fire_due(
    worker: Worker, s: CronSchedule, last: dict[str, float | None], now: float
) -> None:
    previous = last[s.name]
    tick = s.latest_due(previous, now)
    if tick is None:
        return
    # No history: the schedule starts now (nothing was missed). Otherwise the latest due tick
    # runs, unless the policy is "skip" and it is more than `grace` late.
    fire = previous is not None and (s.catch_up == "latest" or now - tick <= s.grace)
    task = worker.app.tasks[s.task]
    queue, job = Call(task, (), {}, Options(job_id=s.job_id(tick))).prepare()
    keys = worker.app.keys(queue)
    # a tick carries the active trace context like any enqueue, but starts no trace of its own
    spans = publish([(queue, job)], new_trace=False) if fire else None
    send = worker.app.scripts.cron(
        keys, keys.cron_state(s.name), round(tick * 1000), fire, job, ran=keys.cron_ran(s.name)
    )
    if spans is None:
        written = await send
    else:
        with spans:
            written = await send
    if written:
        log.info(
            "cron %s fired for tick %s",
            s.name,
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(tick)),
        )
    last[s.name] = tick


async def _load_state(worker: Worker, schedules: list[CronSchedule]) -> dict[str, float | None]:
    app = worker.app
    async with app.redis.pipeline(transaction=False) as pipe:
        for s in schedules:
            pipe.get(app.keys(app.tasks[s.task].queue).cron_state(s.name))
        values = await pipe.execute()
    return {
        s.name: None if v is None else int(v) / 1000 for s, v in zip(schedules, values, strict=True)
    }


async def _redis_offset(worker: Worker) -> float:
    """Redis' clock minus ours, in seconds (half the round trip is taken as the skew)."""
    before = time.time()
    seconds, micros = await worker.app.redis.time()
    after = time.time()
    return seconds + micros / 1e6 - (before + after) / 2
