"""Jobs finished per second across an app's workers, for the dashboard's chart.

Every worker's heartbeat carries its running total of finished jobs; each time the dashboard
reads them it adds what each worker finished since its previous reading into 10-second
buckets, and keeps the last 10 minutes. A worker seen for the first time (or restarted, its
total lower than before) counts from that reading on, so restarts never show as bursts.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

BUCKET = 10.0  # seconds per bar
WINDOW = 600.0  # seconds kept


class Throughput:
    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock
        self._totals: dict[str, int] = {}
        self._buckets: OrderedDict[float, int] = OrderedDict()

    def add(self, workers: list[dict[str, Any]]) -> None:
        """Record the ``done`` totals of the workers alive now."""
        now = self._clock()
        start = now - now % BUCKET
        finished = 0
        for w in workers:
            name, done = str(w["consumer"]), int(w["done"])
            before = self._totals.get(name)
            if before is not None and done >= before:
                finished += done - before
            self._totals[name] = done
        self._totals = {str(w["consumer"]): self._totals[str(w["consumer"])] for w in workers}
        self._buckets[start] = self._buckets.get(start, 0) + finished
        while self._buckets and next(iter(self._buckets)) < now - WINDOW:
            self._buckets.popitem(last=False)

    def series(self) -> list[dict[str, float]]:
        """One point per bucket, oldest first: its start (epoch s) and jobs per second."""
        return [{"t": t, "rate": n / BUCKET} for t, n in self._buckets.items()]
