"""``GroupJob``: a handle to an enqueued group, read from its join record (``canvas.py``)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import orjson

from .connection import pack
from .errors import JobCancelled, JobNotFound, TaskFailed

if TYPE_CHECKING:
    from .app import App
    from .keys import QueueKeys

_READ_CHUNK = 1000  # member outcomes read per HMGET


class GroupJob:
    """The members of ``group(...)`` as one handle: ``results()``, ``progress()``,
    ``cancel()``. ``app.group_job(id)`` gets it back in another process."""

    __slots__ = ("_app", "_keys", "_total", "id")

    def __init__(
        self, app: App, group_id: str, queue: str | None = None, total: int | None = None
    ) -> None:
        self._app = app
        self.id = group_id
        self._keys: QueueKeys | None = app.keys(queue) if queue is not None else None
        self._total = total

    def __repr__(self) -> str:
        return f"<GroupJob {self.id!r}>"

    async def _resolve(self) -> QueueKeys:
        if self._keys is None:
            self._keys = await self._app._find_job(self.id, group=True)
        return self._keys

    async def progress(self) -> tuple[int, int]:
        """``(finished, total)``: how many members have finished (in any final state)."""
        keys = await self._resolve()
        done, total = await self._app.redis.hmget(keys.flow(self.id), ("done", "total"))
        if total is None:
            raise JobNotFound(self.id, [keys.queue])
        return int(done or 0), int(total)

    async def done(self) -> bool:
        """Whether the group has its outcome: every member finished, or one failed."""
        keys = await self._resolve()
        fired = await self._app.redis.hget(keys.flow(self.id), "fired")
        return fired is not None

    async def results(self, timeout: float | None = None) -> list[Any]:
        """Wait for every member and return their results in member order.

        Raises ``TaskFailed`` for the first member (in member order) that failed, and
        ``JobCancelled`` when one was cancelled; ``TimeoutError`` when the group has not
        finished in ``timeout`` seconds. Pushed, like ``Job.result()``, never polled.
        """
        keys = await self._resolve()
        key = keys.flow(self.id)
        deadline = None if timeout is None else time.monotonic() + timeout
        conn = self._app._connection()
        read = pack("HMGET", key, "fired", "total")
        async with conn.results.watch(keys.done(self.id), read) as w:
            state, w.state = w.state, None
            while True:
                w.event.clear()
                w.message = None
                if state is None:
                    (state,) = await conn.lane.call(read)
                if isinstance(state, Exception):
                    raise state
                if state[1] is None:
                    raise JobNotFound(self.id, [keys.queue])
                if state[0] is not None:
                    return await self._outcomes(key, int(state[1]))
                state = None
                if w.event.is_set():
                    continue
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"group {self.id!r} did not finish within {timeout}s")
                try:
                    async with asyncio.timeout(remaining):
                        await w.event.wait()
                except TimeoutError:
                    continue  # re-read once more, then raise above

    async def result(self, timeout: float | None = None) -> list[Any]:
        """The same as ``results()``: a group's result is the list of its members'."""
        return await self.results(timeout)

    async def _outcomes(self, key: str, total: int) -> list[Any]:
        names = [f"r:{i}" for i in range(total)]
        async with self._app.redis.pipeline(transaction=False) as pipe:
            for i in range(0, total, _READ_CHUNK):
                pipe.hmget(key, names[i : i + _READ_CHUNK])
            chunks = await pipe.execute()
        out: list[Any] = []
        for raw in (v for chunk in chunks for v in chunk):
            if raw is None:  # not finished: the group fired at another member's failure
                out.append(None)
            elif raw[:1] == b"!":
                out.append(_Failed(orjson.loads(raw[1:])))
            else:
                out.append(orjson.loads(raw))
        for value in out:
            if isinstance(value, _Failed):
                value.raise_()
        return out

    async def cancel(self) -> bool:
        """Cancel every member (and every step of the workflow) not finished yet; ``False``
        when nothing was left to cancel."""
        keys = await self._resolve()
        flow = await self._app.redis.hget(keys.flow(self.id), "flow")
        if not flow:
            raise JobNotFound(self.id, [keys.queue])
        from .handover import cancel_workflow

        return (
            await cancel_workflow(self._app, flow.decode() if isinstance(flow, bytes) else flow) > 0
        )


class _Failed:
    """A member's failure as its join stored it (``flow.lua``)."""

    __slots__ = ("cause",)

    def __init__(self, cause: Any) -> None:
        self.cause = cause if isinstance(cause, dict) else {}

    def raise_(self) -> None:
        c = self.cause
        step = str(c.get("step", "?"))
        if c.get("cancelled"):
            raise JobCancelled(step)
        raise TaskFailed(
            step,
            str(c.get("exc_type") or "Error"),
            f"group member {c.get('task', '?')!r} (job {step}) failed: {c.get('error', '')}",
            str(c.get("traceback") or ""),
        )
