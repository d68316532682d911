"""Writing finished jobs back: one ``complete`` script call per batch, never per job.

A job's record sits in a per-queue buffer from the moment its function returns until the
flush lands; the flusher takes everything buffered at once, so the batch grows by itself
under load. Buffered entries are still ours in the stream, so the lease renewer keeps
renewing them until they are written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.exceptions import RedisError

from ..keys import QueueKeys
from ..scripts import Scripts, WorkerArgs

log = logging.getLogger("aioq.worker")

RECORD = 8  # values per record, see COMPLETE in scripts/worker.py
Record = tuple[str, bytes, str | bytes, int, bytes | str, str, str, int]


class Completer:
    def __init__(
        self,
        scripts: Callable[[], Scripts],
        worker_args: WorkerArgs,
        on_written: Callable[[int], None],
        on_handed: Callable[[QueueKeys, list[list[bytes]]], None] | None = None,
    ) -> None:
        self._scripts = scripts
        self._worker_args = worker_args
        self._on_written = on_written
        self._on_handed = on_handed  # finished workflow jobs' hand-overs (worker/flows.py)
        self._buffers: dict[QueueKeys, list[Record]] = {}
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        # outcomes written so far by record kind ("ok", "fail", "retry", ...), fenced ones
        # excluded: the worker's periodic summary line (metrics.JobSummary) reads them
        self.written: dict[str, int] = {}

    def add(self, keys: QueueKeys, record: Record) -> None:
        buf = self._buffers.get(keys)
        if buf is None:
            buf = self._buffers[keys] = []
        buf.append(record)
        self._wake.set()

    async def settled(self) -> None:
        """Return once no write is under way (at once when none is)."""
        if self._lock.locked():
            async with self._lock:
                pass

    def writable_now(self) -> bool:
        """Whether a flush would start at once (none under way)."""
        return not self._lock.locked()

    def pending(self, keys: QueueKeys) -> list[bytes]:
        """Entry ids written into the buffer but not yet to Redis (their leases still count).
        Safe from another thread (the lease thread): it iterates a copy made in one C call."""
        return [r[1] for r in list(self._buffers.get(keys, ()))]

    def __len__(self) -> int:
        return sum(len(b) for b in self._buffers.values())

    async def run(self) -> None:
        """Flush whenever something is buffered; retries on Redis errors for ever."""
        delay = 0.05
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
                delay = 0.05
            except (RedisError, OSError) as exc:  # any: ending this loop would write nothing more
                log.warning("writing results failed (%s); retrying in %.2fs", exc, delay)
                self._wake.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def flush(self) -> None:
        """Write everything buffered now; on error the records stay buffered."""
        async with self._lock:
            await self._flush()

    async def _flush(self) -> None:
        for keys, buf in list(self._buffers.items()):
            while buf:
                batch = buf[:500]
                args: list[object] = []
                rare: list[Record] = []  # anything but a success: counted by kind below
                for rec in batch:
                    args.extend(rec)
                    if rec[0] != "ok":
                        rare.append(rec)
                fenced, handed = await self._scripts().complete(keys, self._worker_args, args)
                del buf[: len(batch)]
                if handed and self._on_handed is not None:
                    self._on_handed(keys, handed)
                self._count(batch, rare, fenced)
                if fenced:
                    names = ", ".join(f.decode(errors="replace") for f in fenced)
                    log.warning(
                        "lost the lease of %d job(s) before writing their outcome; the new "
                        "owner's outcome stands: %s", len(fenced), names,
                    )  # fmt: skip
                self._on_written(len(batch))

    def _count(self, batch: list[Record], rare: list[Record], fenced: list[bytes]) -> None:
        written = self.written
        ok = len(batch) - len(rare)
        if fenced:  # rare: a lost lease; the new owner's outcome is the one that counts
            lost = set(fenced)
            gone = [r for r in batch if _raw(r[2]) in lost]
            ok -= sum(r[0] == "ok" for r in gone)
            rare = [r for r in rare if _raw(r[2]) not in lost]
        written["ok"] = written.get("ok", 0) + ok
        for rec in rare:
            written[rec[0]] = written.get(rec[0], 0) + 1


def _raw(job_id: str | bytes) -> bytes:
    return job_id if isinstance(job_id, bytes) else job_id.encode()
