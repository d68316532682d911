"""Cron tick arithmetic on an injected clock: instant, no Redis, no sleeping."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from aioq.cron import CronSchedule, parse_every, parse_timezone

RIGA = ZoneInfo("Europe/Riga")  # DST: 2026-03-29 03:00 -> 04:00, 2026-10-25 04:00 -> 03:00


def ts(*args: int, tz: ZoneInfo | None = None, fold: int = 0) -> float:
    return datetime(*args, tzinfo=tz or UTC, fold=fold).timestamp()  # type: ignore[misc]


def ticks(s: CronSchedule, start: float, end: float) -> list[float]:
    out, t = [], s.next_after(start)
    while t <= end:
        out.append(t)
        t = s.next_after(t)
    return out


def test_every_interval_ticks_are_epoch_aligned() -> None:
    """Interval ticks are multiples of the interval, so every worker computes the same ones."""
    s = CronSchedule("t", every=30)
    assert s.next_after(ts(2026, 1, 1, 0, 0, 10)) == ts(2026, 1, 1, 0, 0, 30)
    assert s.next_after(ts(2026, 1, 1, 0, 0, 30)) == ts(2026, 1, 1, 0, 1, 0)
    assert s.latest_due(None, ts(2026, 1, 1, 0, 0, 59)) == ts(2026, 1, 1, 0, 0, 30)
    assert s.latest_due(ts(2026, 1, 1, 0, 0, 30), ts(2026, 1, 1, 0, 0, 59)) is None
    half = CronSchedule("t", every=0.25)
    assert half.next_after(10.1) == 10.25


def test_cron_expression_next_and_latest() -> None:
    s = CronSchedule("t", "*/5 * * * *")
    assert s.next_after(ts(2026, 1, 1, 10, 3)) == ts(2026, 1, 1, 10, 5)
    assert s.next_after(ts(2026, 1, 1, 10, 5)) == ts(2026, 1, 1, 10, 10)
    assert s.latest_due(None, ts(2026, 1, 1, 10, 5)) == ts(2026, 1, 1, 10, 5)
    assert s.latest_due(None, ts(2026, 1, 1, 10, 9, 59)) == ts(2026, 1, 1, 10, 5)
    # hours of downtime: only the latest missed tick is due (the catch-up policy)
    assert s.latest_due(ts(2026, 1, 1, 10, 5), ts(2026, 1, 1, 13, 7)) == ts(2026, 1, 1, 13, 5)
    assert s.latest_due(ts(2026, 1, 1, 13, 5), ts(2026, 1, 1, 13, 7)) is None


def test_spring_forward_neither_skips_nor_doubles() -> None:
    """A daily tick inside the skipped hour runs once, right after the gap."""
    s = CronSchedule("t", "30 3 * * *", timezone=RIGA)
    got = ticks(s, ts(2026, 3, 27, 12, tz=RIGA), ts(2026, 3, 31, 12, tz=RIGA))
    local = [datetime.fromtimestamp(t, RIGA).strftime("%m-%d %H:%M") for t in got]
    assert local == ["03-28 03:30", "03-29 04:00", "03-30 03:30", "03-31 03:30"]


def test_fall_back_daily_tick_fires_once() -> None:
    """A daily tick inside the repeated hour fires once, not twice."""
    s = CronSchedule("t", "30 3 * * *", timezone=RIGA)
    got = ticks(s, ts(2026, 10, 24, 12, tz=RIGA), ts(2026, 10, 26, 12, tz=RIGA))
    assert len(got) == 2
    assert got[0] == ts(2026, 10, 25, 3, 30, tz=RIGA, fold=0)


def test_fall_back_frequent_ticks_are_distinct_instants() -> None:
    """Every-15-minutes through the repeated hour: 8 distinct instants, none repeated."""
    s = CronSchedule("t", "*/15 * * * *", timezone=RIGA)
    got = ticks(s, ts(2026, 10, 25, 2, 50, tz=RIGA), ts(2026, 10, 25, 4, 0, tz=RIGA, fold=0))
    assert len(got) == len(set(got)) == 9
    assert got == sorted(got)
    assert all(b - a == 900 for a, b in itertools.pairwise(got))


def test_latest_due_across_dst_matches_forward_iteration() -> None:
    s = CronSchedule("t", "0 * * * *", timezone=RIGA)
    for day, hour in [(3, 29), (10, 25)]:
        start = ts(2026, day, hour - 1, 20, tz=RIGA)
        forward = ticks(s, start, start + 12 * 3600)
        for now in range(int(start) + 3600, int(start) + 12 * 3600, 600):
            expected = max(t for t in forward if t <= now)
            assert s.latest_due(None, now) == expected


def test_job_ids_name_schedule_and_tick() -> None:
    s = CronSchedule("report", "*/5 * * * *")
    assert (
        s.job_id(ts(2026, 1, 1, 10, 5))
        == f"cron:report@*/5 * * * *:{int(ts(2026, 1, 1, 10, 5))}000"
    )
    assert CronSchedule("report", every=30).name == "report@every 30s"
    assert CronSchedule("r", "0 9 * * *", timezone=RIGA).name == "r@0 9 * * * Europe/Riga"


@pytest.mark.parametrize("expr", ["61 * * * *", "* * *", "every minute", "*/0 * * * *", ""])
def test_invalid_expression_names_it(expr: str) -> None:
    with pytest.raises(ValueError, match="invalid cron expression") as caught:
        CronSchedule("report", expr)
    assert repr(expr) in str(caught.value)


def test_bad_every_timezone_and_policy() -> None:
    with pytest.raises(ValueError, match="every=0"):
        parse_every(0)
    assert parse_every(timedelta(minutes=2)) == 120
    with pytest.raises(ValueError, match="unknown timezone 'Mars/Olympus'"):
        parse_timezone("Mars/Olympus")
    with pytest.raises(ValueError, match="catch_up"):
        CronSchedule("t", every=1, catch_up="all")  # type: ignore[arg-type]
