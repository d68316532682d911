"""``current_job()``: what a running task can learn about itself."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .keys import QueueKeys


class JobContext:
    """The job a task is running as: ``id``, ``attempt`` (1-based), ``task``, ``queue``."""

    __slots__ = ("_keys", "_redis", "attempt", "id", "queue", "task")

    def __init__(self, redis: Redis, keys: QueueKeys, job_id: str, task: str, attempt: int) -> None:
        self._redis = redis
        self._keys = keys
        self.id = job_id
        self.task = task
        self.attempt = attempt
        self.queue = keys.queue

    async def set_progress(self, value: Any) -> None:
        """Record a JSON value as the job's progress (visible in ``job.info().progress``)."""
        data = orjson.dumps(value)
        await self._redis.hset(self._keys.job(self.id), "progress", data)

    def __repr__(self) -> str:
        return f"<JobContext {self.task} id={self.id!r} attempt={self.attempt}>"


_current: ContextVar[JobContext | None] = ContextVar("aioq_current_job", default=None)


def current_job() -> JobContext:
    """The job the calling task is running as; raises ``RuntimeError`` outside a task."""
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("current_job() is only available inside a task run by an aioq worker")
    return ctx
