"""Read-only views of an app's queues for the CLI and the dashboard (one pipeline each)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from redis.exceptions import ResponseError

from .app import App
from .keys import GROUP


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts of one queue: ``queued`` waiting in the stream, ``running`` delivered and not
    finished, ``scheduled`` waiting for their time, ``dead`` in the dead-letter stream."""

    queue: str
    queued: int
    running: int
    scheduled: int
    dead: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def queue_stats(app: App, queues: list[str] | None = None) -> list[QueueStats]:
    names = queues or app.queues
    redis = app.redis
    async with redis.pipeline(transaction=False) as pipe:
        for q in names:
            k = app.keys(q)
            pipe.xlen(k.stream)
            pipe.zcard(k.scheduled)
            pipe.xlen(k.dead)
        counts = await pipe.execute()
    out = []
    for i, q in enumerate(names):
        length, scheduled, dead = counts[3 * i : 3 * i + 3]
        queued, running = length, 0
        try:
            groups: list[dict[str, Any]] = await redis.xinfo_groups(app.keys(q).stream)
        except ResponseError:  # no stream yet
            groups = []
        for g in groups:
            if g.get("name") in (GROUP, GROUP.encode()):
                running = int(g.get("pending") or 0)
                lag = g.get("lag")
                queued = int(lag) if lag is not None else max(0, length - running)
        out.append(QueueStats(q, queued, running, int(scheduled), int(dead)))
    return out
