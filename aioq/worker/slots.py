"""Concurrency slots shared by every queue a worker serves."""

from __future__ import annotations

import asyncio


class Slots:
    """Counts free concurrency; fetchers reserve several slots at once and give back the rest."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._changed = asyncio.Event()

    async def take(self, most: int) -> int:
        """Wait until at least one slot is free, then reserve up to ``most``."""
        while self.free <= 0:
            self._changed.clear()
            await self._changed.wait()
        n = min(self.free, most)
        self.free -= n
        return n

    def take_nowait(self, most: int) -> int:
        n = max(0, min(self.free, most))
        self.free -= n
        return n

    def give(self, n: int = 1) -> None:
        if n:
            self.free += n
            self._changed.set()

    @property
    def busy(self) -> int:
        return self.total - self.free
