"""Global rate limits: ``"N/s"``, ``"N/m"``, ``"N/h"`` starts of a task across every worker
(the units also as ``sec``/``second``, ``min``/``minute``, ``hr``/``hour``: ``UNITS``).

The limiter is a sliding-window log kept in Redis and consulted by the start script (see
``scripts/worker.py``) before a job is marked running: a sorted set of the start times of the
last period. A start is allowed while fewer than N fall inside the window ending now, so no
window of that length ever holds more than N starts (a token bucket or GCRA would allow up to 2N
in a window straddling a refill). A job that is not allowed goes back to the scheduled set for
the instant a start leaves the window that no job turned away before it is waiting for: it holds
no concurrency slot and spends no retry, and a backlog comes back at the rate it can start.

Limits live in the queue's ``ratelimits`` hash (key layout in ``keys.py``): workers write the
limits their code declares, and ``aioq rate-limit`` / ``app.set_rate_limit`` write an override
that wins until it is cleared, so a limit changes without restarting anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PERIODS = {"s": 1_000, "m": 60_000, "h": 3_600_000}
UNITS = {
    "s": "s", "sec": "s", "second": "s",
    "m": "m", "min": "m", "minute": "m",
    "h": "h", "hr": "h", "hour": "h",
}  # fmt: skip
"""Every unit a rate string may use, and the period it stands for (docs/scheduling.md lists
them)."""
_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+)\s*$")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``limit`` starts per ``period_ms`` milliseconds."""

    limit: int
    period_ms: int

    def __str__(self) -> str:
        unit = {v: k for k, v in _PERIODS.items()}[self.period_ms]
        return f"{self.limit}/{unit}"

    @property
    def wire(self) -> str:
        """How the limit is stored in Redis: ``"<limit> <period ms>"``."""
        return f"{self.limit} {self.period_ms}"


def parse_rate(value: str) -> RateLimit:
    """Parse ``"10/m"``; raises ``ValueError`` naming the string when it is not a rate."""
    match = _PATTERN.match(value) if isinstance(value, str) else None
    if match is None or match.group(2) not in UNITS:
        raise ValueError(
            f"invalid rate limit {value!r}: expected N/s, N/m or N/h (e.g. '10/m'; the units "
            "may also be sec, second, min, minute, hr, hour)"
        )
    limit = int(match.group(1))
    if limit < 1:
        raise ValueError(f"invalid rate limit {value!r}: N must be at least 1")
    return RateLimit(limit, _PERIODS[UNITS[match.group(2)]])
