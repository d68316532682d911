"""Cron triggers: when a schedule's ticks fall, computed without any I/O.

A schedule is a 5-field cron expression in a timezone (parsed by ``cronsim``, which follows
Debian cron across daylight-saving changes: a tick inside the hour skipped in spring runs at
the first instant after it, and a daily tick in the hour repeated in autumn runs once) or a
fixed interval (``every=``), whose ticks are the multiples of the interval since the Unix
epoch. Either way a tick is an absolute instant, the same on every worker, so it names the job
it enqueues (``cron:<schedule>:<epoch ms>``) and the idempotent enqueue makes it run once
however many workers fire it.

Catch-up for ticks missed while no worker ran: ``"latest"`` (the default) runs the most recent
missed tick once; ``"skip"`` runs it only if it is at most ``grace`` seconds late.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

CatchUp = Literal["latest", "skip"]


@dataclass(frozen=True)
class CronSchedule:
    """One trigger of a task: ``expression`` in ``timezone``, or every ``every`` seconds."""

    task: str
    expression: str | None = None
    every: float | None = None
    timezone: tzinfo = UTC
    catch_up: CatchUp = "latest"
    grace: float = 60.0
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if (self.expression is None) == (self.every is None):
            raise ValueError(f"cron for task {self.task!r}: give a cron expression or every=")
        if self.expression is not None:
            try:
                CronSim(self.expression, datetime.now(UTC))
            except (CronSimError, ValueError) as exc:
                raise ValueError(
                    f"invalid cron expression {self.expression!r} for task {self.task!r}: {exc}"
                ) from None
        if self.every is not None and not self.every >= 0.001:
            raise ValueError(f"cron every={self.every!r} for task {self.task!r}: must be > 0")
        if self.catch_up not in ("latest", "skip"):
            raise ValueError(f"catch_up must be 'latest' or 'skip', got {self.catch_up!r}")
        if not self.name:
            what = self.expression if self.expression is not None else f"every {self.every:g}s"
            zone = "" if self.timezone is UTC else f" {self.timezone}"
            object.__setattr__(self, "name", f"{self.task}@{what}{zone}")

    def next_after(self, t: float) -> float:
        """The first tick strictly after epoch second ``t``."""
        if self.every is not None:
            every_ms = round(self.every * 1000)
            return (math.floor(t * 1000 / every_ms) + 1) * every_ms / 1000
        assert self.expression is not None
        start = datetime.fromtimestamp(t, tz=self.timezone)
        return next(iter(CronSim(self.expression, start))).timestamp()

    def latest_due(self, last: float | None, now: float) -> float | None:
        """The most recent tick after ``last`` and at or before ``now`` (None if none)."""
        if self.every is not None:
            every_ms = round(self.every * 1000)
            tick = math.floor(now * 1000 / every_ms) * every_ms / 1000
            return tick if last is None or tick > last else None
        assert self.expression is not None
        start = datetime.fromtimestamp(now, tz=self.timezone)
        before = next(iter(CronSim(self.expression, start, reverse=True))).timestamp()
        after = self.next_after(before)
        tick = after if after <= now else before
        return tick if last is None or tick > last else None

    def job_id(self, tick: float) -> str:
        return f"cron:{self.name}:{round(tick * 1000)}"


def parse_timezone(value: str | tzinfo | None) -> tzinfo:
    """A timezone from an IANA name (``"Europe/Riga"``) or a tzinfo; UTC by default."""
    if value is None:
        return UTC
    if isinstance(value, tzinfo):
        return value
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown timezone {value!r} (use an IANA name like 'Europe/Riga')"
        ) from None


def parse_every(every: float | timedelta) -> float:
    seconds = every.total_seconds() if isinstance(every, timedelta) else float(every)
    if not seconds > 0:
        raise ValueError(f"cron every={every!r} must be a positive number of seconds")
    return seconds
