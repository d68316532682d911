"""Concurrency slots shared by every queue a worker serves.

Fetchers reserve several slots at once and give back what they did not use. Waiters are served
first come, first served, so with fewer slots than queues the queues take turns instead of one
fetcher taking its slot straight back every time (see ``contended``).
"""

from __future__ import annotations

import asyncio
from collections import deque


class Slots:
    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._waiters: deque[asyncio.Future[int]] = deque()

    async def take(self, most: int) -> int:
        """Wait until at least one slot is free (in turn), then reserve up to ``most``."""
        if self.free > 0 and not self._waiters:
            n = min(self.free, most)
            self.free -= n
            return n
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            handed = await fut  # a slot given back is handed to the first waiter directly
        except BaseException:
            if fut in self._waiters:
                self._waiters.remove(fut)
            elif fut.done() and not fut.cancelled():
                self.give(fut.result())  # handed a slot while being cancelled: pass it on
            raise
        extra = min(self.free, most - handed)
        self.free -= extra
        return handed + extra

    def give(self, n: int = 1) -> None:
        while n > 0 and self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(1)
                n -= 1
        self.free += n

    @property
    def contended(self) -> bool:
        """Someone is waiting for a slot: a fetcher holding slots should not park for long."""
        return bool(self._waiters)

    def overdraw(self, n: int) -> None:
        """Reserve ``n`` slots at once, free or not (jobs Redis already started for this
        worker, found after a lost reply: they run in any case); later takers wait longer."""
        self.free -= n
