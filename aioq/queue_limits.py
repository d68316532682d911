"""Bounded queues: ``App(queue_limits={"emails": 10_000})``.

A queue's *size* is the number of its jobs that have not finished: queued (in its streams),
running (a job's stream entry goes only when it finishes) and scheduled (delays, retry
backoff, rate-limit waits). The enqueue script counts it with eleven O(1) reads (``XLEN`` of
each priority's stream and ``ZCARD`` of the scheduled set, ``scripts/limit.lua``) and writes
the call's jobs only if all of them fit, so a full queue is refused with ``QueueFull`` and
nothing of the call written to it. Held workflow steps are in no stream or set: they count
from the moment their predecessors start them.

``options(wait_if_full=seconds)`` waits for room instead, like ``queue.Queue.put(timeout=)``.
Room appears when a job finishes, and every script that finishes jobs notes them in the
queue's ``recent`` stream: the producer blocks in ``XREAD`` on that stream after the entry the
refusal named (no finish in between is missed), wakes when a job finishes, and tries again.
Room can also appear with no finish noted (``aioq purge``, the entry of a job cancelled while
queued dropped when a worker reaches it), so a wait re-checks at least every
``ROOM_RECHECK`` seconds. No polling loop runs while jobs finish.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .keys import QueueKeys, validate_name

if TYPE_CHECKING:
    from .app import App

ROOM_RECHECK = 1.0
"""Seconds a producer waiting for room blocks at most before trying again without a finish."""


def check_limits(limits: Mapping[str, int] | None) -> dict[str, int]:
    """``queue_limits`` checked: queue names valid, each limit a whole number >= 1; a
    ``ValueError``/``TypeError`` naming the queue and value otherwise."""
    if limits is None:
        return {}
    if not isinstance(limits, Mapping):
        raise TypeError(f"queue_limits must be a mapping of queue -> limit, got {limits!r}")
    out: dict[str, int] = {}
    for queue, limit in limits.items():
        try:
            validate_name("queue", queue)
        except ValueError as exc:
            raise ValueError(f"queue_limits: {exc}") from None
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(
                f"queue_limits[{queue!r}] must be a whole number of jobs, got {limit!r}"
            )
        if limit < 1:
            raise ValueError(f"queue_limits[{queue!r}] must be >= 1, got {limit!r}")
        out[queue] = limit
    return out


async def wait_for_room(app: App, keys: QueueKeys, after: bytes, deadline: float) -> bool:
    """Block until a job of the queue finishes after ``after`` (an id of its ``recent``
    stream), ``ROOM_RECHECK`` passes, or ``deadline`` (``time.monotonic()``); ``False`` once
    the deadline has passed (the caller gives up), ``True`` when it should try again."""
    left = deadline - time.monotonic()
    if left <= 0:
        return False
    block = max(1, round(min(left, ROOM_RECHECK) * 1000))
    await app._call(app.redis.xread({keys.recent: after}, count=1, block=block))
    return True


async def room(app: App, keys: QueueKeys) -> tuple[int, bytes]:
    """The queue's size and its newest ``recent`` id, read in that order so that a wait from
    that id misses no finish after the size (a workflow's check before it is written)."""
    async with app.redis.pipeline(transaction=False) as pipe:
        pipe.xrevrange(keys.recent, "+", "-", count=1)
        pipe.zcard(keys.scheduled)
        for level in keys.levels:
            pipe.xlen(level.stream)
        newest, *sizes = await app._call(pipe.execute())
    return sum(sizes), (newest[0][0] if newest else b"0-0")
