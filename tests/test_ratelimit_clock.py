"""The rate limiter's maths on an injected clock: the start script's own `rate_allows` (Lua,
run by a real Redis), called with times the test chooses, so these tests take no real time."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from aioq import App
from aioq.scripts import _PRELUDE

pytestmark = pytest.mark.anyio

# the production function, driven with ARGV: 6 task, 7 entry id, 8 job id, 9 now (epoch ms),
# 10 the priority whose stream the entry is in
DRIVER = (
    _PRELUDE
    + """
use_level(tonumber(ARGV[10]))
return rate_allows(ARGV[6], ARGV[7], ARGV[8], tonumber(ARGV[9])) and 1 or 0"""
)


class Limiter:
    def __init__(self, app: App, limit: int, period_ms: int) -> None:
        self.app, self.keys = app, app.keys()
        self.limit, self.period = limit, period_ms
        self.n = 0

    async def setup(self) -> None:
        await self.app.redis.hset(self.keys.ratelimits, "t", f"{self.limit} {self.period}")

    async def ask(
        self, now: int, entry_id: str | None = None, priority: int = 0
    ) -> tuple[bool, float | None]:
        """One start asked for at ``now``: allowed, or the time it is due again."""
        self.n += 1
        jid = f"j{self.n}"
        await self.app.redis.hset(self.keys.job(jid), "status", "queued")
        eid = entry_id or f"{self.n}-0"
        args = ["aioq", "c", 5, 60, 100, "t", eid, jid, now, priority]
        keys = self.keys.declared
        allowed = await self.app.redis.eval(DRIVER, len(keys), *keys, *args)
        due = await self.app.redis.zscore(self.keys.scheduled, jid)
        return bool(allowed), due


async def test_a_full_window_turns_jobs_away_until_a_start_leaves_it(app: App) -> None:
    lim = Limiter(app, 3, 1000)
    await lim.setup()
    t0 = 10_000_000
    assert [(await lim.ask(t0 + dt))[0] for dt in (0, 100, 200)] == [True] * 3
    # refused ones are spread out: each waits for the next start to leave the window, one
    # period later per full window of jobs already waiting
    refused = [await lim.ask(t0 + 300) for _ in range(4)]
    assert refused == [
        (False, t0 + 1000), (False, t0 + 1100), (False, t0 + 1200), (False, t0 + 2000)
    ]  # fmt: skip
    assert (await lim.ask(t0 + 999))[0] is False  # the window still holds three starts
    assert (await lim.ask(t0 + 1000))[0] is True  # the first one left it
    # a turned-away job says why it waits, and when it is due (its scheduled score)
    info = await app.job("j4", "default").info()
    assert (info.wait_reason, info.due_at) == (
        "rate limit", datetime.fromtimestamp((t0 + 1000) / 1000, UTC)
    )  # fmt: skip


async def test_no_window_ever_holds_more_than_the_limit(app: App) -> None:
    """Random arrivals over 2 simulated minutes: every 1 s window holds at most 5 starts,
    and the limiter is not stingy either: a job asking when the window has room starts."""
    lim = Limiter(app, 5, 1000)
    await lim.setup()
    rng = random.Random(7)
    now = 50_000_000
    allowed: list[int] = []
    for _ in range(600):
        now += rng.choice((1, 5, 20, 90, 250))
        ok, _ = await lim.ask(now)
        in_window = [t for t in allowed if t > now - 1000]
        assert ok == (len(in_window) < 5), (now, in_window)
        if ok:
            allowed.append(now)
    for i, t in enumerate(allowed):
        assert sum(1 for u in allowed[i:] if u < t + 1000) <= 5
    assert len(allowed) >= 5 * (now - 50_000_000) // 1000 * 0.9  # about the full rate


async def test_waiting_jobs_stop_counting_once_due(app: App) -> None:
    lim = Limiter(app, 1, 1000)
    await lim.setup()
    t0 = 90_000_000
    assert (await lim.ask(t0))[0] is True
    assert await lim.ask(t0 + 10) == (False, t0 + 1000)
    assert await lim.ask(t0 + 20) == (False, t0 + 2000)  # behind the first one waiting
    # at t0 + 1500 the first waiting job is due (it went back to the scheduled set and is no
    # longer "waiting"); a newcomer then waits behind the one still waiting only
    assert await lim.ask(t0 + 1500) == (True, None)
    assert await lim.ask(t0 + 1600) == (False, t0 + 1500 + 2000)


async def test_starts_from_two_priorities_with_the_same_entry_id_both_count(app: App) -> None:
    """Each priority's stream numbers its own entries, so two starts can share an entry id."""
    lim = Limiter(app, 2, 1000)
    await lim.setup()
    t0 = 120_000_000
    assert (await lim.ask(t0, "1700000000000-0", priority=0))[0] is True
    assert (await lim.ask(t0 + 1, "1700000000000-0", priority=5))[0] is True
    assert (await lim.ask(t0 + 2))[0] is False  # two starts in the window already
