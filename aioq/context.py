"""``current_job()``: what a running task can learn about itself."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import NoScriptError

from .scripts import PROGRESS, PROGRESS_SHA

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
        """Record a JSON value as the job's progress (visible in ``job.info().progress``) and
        publish it to whoever iterates ``job.progress()``; one round trip."""
        data = orjson.dumps(value)
        args = (2, self._keys.job(self.id), self._keys.progress(self.id), data)
        try:
            await self._redis.evalsha(PROGRESS_SHA, *args)
        except NoScriptError:  # a restarted or flushed Redis forgets scripts
            await self._redis.eval(PROGRESS, *args)

    def __repr__(self) -> str:
        return f"<JobContext {self.task} id={self.id!r} attempt={self.attempt}>"


_current: ContextVar[JobContext | None] = ContextVar("aioq_current_job", default=None)


def current_job() -> JobContext:
    """The job the calling task is running as; raises ``RuntimeError`` outside a task."""
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("current_job() is only available inside a task run by an aioq worker")
    return ctx
