"""The worker's part in workflows: pass on the hand-overs of the jobs it finished, and sweep
its queues' outboxes for those a dead worker left (``handover.py`` says why that is enough).

The completer hands over what each ``complete`` call returned; one loop passes it on in
batches (every queue's records in one FLOW round trip), so a group of 10,000 members costs a
FLOW call per completion batch, not per member. Every ``SWEEP_EVERY`` seconds the same loop
sweeps each queue's outbox for hand-overs older than ``handover.SWEEP_AFTER``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from ..handover import HandOver, hand_over, sweep
from ..keys import QueueKeys

if TYPE_CHECKING:
    from .core import Worker

log = logging.getLogger("aioq.workflow")

SWEEP_EVERY = 2.0  # seconds between two sweeps of the worker's queues' outboxes


class HandOvers:
    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._pending: list[HandOver] = []
        self._busy = 0
        self._wake = asyncio.Event()

    def add(self, keys: QueueKeys, rows: Sequence[Sequence[bytes]]) -> None:
        self._pending += [(keys, r) for r in rows]
        self._wake.set()

    def __len__(self) -> int:
        """Hand-overs not yet passed on (a burst worker waits for them before it exits)."""
        return len(self._pending) + self._busy

    async def run(self) -> None:
        delay = 0.05
        next_sweep = time.monotonic() + SWEEP_EVERY
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_sweep - time.monotonic())):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + SWEEP_EVERY
                    for keys in self._worker.queue_keys:
                        if await sweep(self._worker.app, keys):
                            self._worker.woken()
                delay = 0.05
            except (RedisError, OSError) as exc:  # any: ending this loop would pass on nothing
                log.warning("passing on workflow steps failed (%s); retrying in %.2fs", exc, delay)
                self._wake.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def flush(self) -> None:
        """Pass on everything pending now; on error (or cancellation) what was not passed on
        yet, including what followed from what was, stays pending."""
        batch, self._pending = self._pending, []
        if not batch:
            return
        left: list[HandOver] = list(batch)
        self._busy += len(batch)
        try:
            await hand_over(self._worker.app, batch, left)
        finally:
            self._busy -= len(batch)
            self._pending[:0] = left
        self._worker.woken()  # a next step may be on a stream now (burst fetchers re-check)

    async def close(self) -> None:
        """At stop (after the loop was cancelled, perhaps amid a hand-over: what it had not
        passed on is pending again): pass on what is pending, for a few seconds at most (the
        outbox keeps the rest for another worker's sweep)."""
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(5.0):
                while self._pending:
                    await self.flush()
