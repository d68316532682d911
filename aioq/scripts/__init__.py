"""Every Lua script aioq runs, with typed Python wrappers: ``Scripts`` calls them over one
``CommandLane``; ``WorkerArgs`` is the ARGV prefix the worker's scripts share.

Each script touches the keys of exactly one queue (one hash tag, one cluster slot) and is one
round trip. Every key a script touches whose name is known before the call is declared in its
KEYS (most get the queue's ``QueueKeys.declared``, see ``queue.lua``); the keys named by data
it reads (a job's record, a task's rate log) are built on the same hash tag. Times come from
Redis ``TIME`` so workers with skewed clocks agree. Field names of the job hash are listed in
``message.py``; key names in ``keys.py``, whose suffixes are rendered into the Lua
(``lua.py``). The Lua lives in ``.lua`` files beside this module; the modules naming them::

    enqueue.py   ENQUEUE and CRON: writing jobs
    worker.py    the worker's path: FETCH, START_NEW, RECLAIM, RECOVER, COMPLETE, RENEW,
                 RELEASE_ALL, PROMOTE, CANCEL and TAKE, on a shared ``_PRELUDE`` (start.lua)
    flows.py     workflows' hand-overs: FLOW and SWEEP
    ops.py       the operations: REQUEUE_DEAD, RETRY, PURGE, PURGE_KEYED, HEARTBEAT, PROGRESS
    helpers.py   ``helpers.lua``, the Lua helpers every script may include

Every script and constant is importable from here (``from aioq.scripts import FETCH``), and
so are the private Lua pieces that tests and benchmarks build on (``_PRELUDE``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from redis.exceptions import NoScriptError

from ..acl import denied, refused
from ..connection import Lane, pack
from ..errors import NotDurable
from ..keys import GROUP, QueueKeys
from . import enqueue as _enqueue_module
from .enqueue import CRON, DURABLE_TIMEOUT, ENQUEUE, ENQUEUE_ARGS, ENQUEUE_CHUNK
from .flows import FLOW, FLOW_ARGS, FLOW_CHUNK, SWEEP
from .helpers import _HELPERS as _HELPERS
from .ops import HEARTBEAT, PROGRESS, PROGRESS_SHA, PURGE, PURGE_KEYED, REQUEUE_DEAD, RETRY
from .worker import _PRELUDE as _PRELUDE
from .worker import (
    CANCEL,
    COMPLETE,
    FAIR,
    FETCH,
    PROMOTE,
    RECLAIM,
    RECOVER,
    RELEASE_ALL,
    RENEW,
    START_NEW,
    TAKE,
)

__all__ = [
    "CANCEL",
    "COMPLETE",
    "CRON",
    "DURABLE_TIMEOUT",
    "ENQUEUE",
    "ENQUEUE_ARGS",
    "ENQUEUE_CHUNK",
    "FAIR",
    "FETCH",
    "FLOW",
    "FLOW_ARGS",
    "FLOW_CHUNK",
    "HEARTBEAT",
    "PROGRESS",
    "PROGRESS_SHA",
    "PROMOTE",
    "PURGE",
    "PURGE_KEYED",
    "RECLAIM",
    "RECOVER",
    "RELEASE_ALL",
    "RENEW",
    "REQUEUE_DEAD",
    "RETRY",
    "START_NEW",
    "SWEEP",
    "TAKE",
    "Scripts",
    "WorkerArgs",
]


class _Script:
    """A Lua script called by its SHA1 over the command lane; reloaded after NOSCRIPT (a
    restarted or flushed Redis forgets scripts)."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, source: str, name: str) -> None:
        self.source = source
        self.name = name
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def command(self, keys: Sequence[Any], args: Sequence[Any]) -> bytes:
        return pack("EVALSHA", self.sha, len(keys), *keys, *args)


class Scripts:
    """Every script, called through typed methods over one ``CommandLane`` (or a cluster's
    ``ClusterLane``)."""

    def __init__(self, lane: Lane) -> None:
        self._lane = lane
        self._user: str | None = lane.user  # named when Redis refuses a command (NOPERM)
        self._enqueue = _Script(ENQUEUE, "ENQUEUE")
        self._fetch = _Script(FETCH, "FETCH")
        self._start_new = _Script(START_NEW, "START_NEW")
        self._reclaim = _Script(RECLAIM, "RECLAIM")
        self._recover = _Script(RECOVER, "RECOVER")
        self._complete = _Script(COMPLETE, "COMPLETE")
        self._renew = _Script(RENEW, "RENEW")
        self._release_all = _Script(RELEASE_ALL, "RELEASE_ALL")
        self._promote = _Script(PROMOTE, "PROMOTE")
        self._cancel = _Script(CANCEL, "CANCEL")
        self._take = _Script(TAKE, "TAKE")
        # operations (ops.py)
        self._requeue_dead = _Script(REQUEUE_DEAD, "REQUEUE_DEAD")
        self._retry = _Script(RETRY, "RETRY")
        self._purge = _Script(PURGE, "PURGE")
        self._purge_keyed = _Script(PURGE_KEYED, "PURGE_KEYED")
        self._heartbeat = _Script(HEARTBEAT, "HEARTBEAT")
        self._cron = _Script(CRON, "CRON")
        self._flow = _Script(FLOW, "FLOW")
        self._sweep = _Script(SWEEP, "SWEEP")

    async def prepare(
        self,
        queues: Sequence[QueueKeys],
        rate_limits: dict[QueueKeys, dict[str, str | None]],
        key_limits: dict[QueueKeys, dict[str, str | None]] | None = None,
    ) -> str | None:
        """Create each queue's consumer group (at id 0, so nothing enqueued before is missed),
        record the rate limits and key limits the code declares (``None``: none) and load
        every script, in one round trip; returns the server's ``maxmemory-policy`` (None when
        the user may not read INFO)."""
        commands = [c for keys in queues for c in _create_groups(keys)]
        for keys, limits in rate_limits.items():
            commands += _declare(keys.ratelimits, limits)
        for keys, limits in (key_limits or {}).items():
            commands += _declare(keys.keylimits, limits)
        scripts = [s for s in vars(self).values() if isinstance(s, _Script)]
        commands += [pack("SCRIPT", "LOAD", s.source) for s in scripts]
        commands.append(pack("INFO", "memory"))  # last: its refusal (an ACL user) is no fault
        *replies, memory = await self._lane.call(commands, len(commands))
        for reply in replies:
            if isinstance(reply, Exception) and refused(reply):
                where = ", ".join(_keys_of(k.stream) for k in queues)
                raise denied(
                    self._user, f"create the consumer groups (XGROUP CREATE) of {where}, "
                    "record rate limits (HSET) and load aioq's scripts (SCRIPT LOAD)", reply,
                ) from reply  # fmt: skip
            if isinstance(reply, Exception) and "BUSYGROUP" not in str(reply):
                raise reply
        if isinstance(memory, Exception):
            return None
        for line in memory.decode(errors="replace").splitlines():
            if line.startswith("maxmemory_policy:"):
                return str(line.partition(":")[2].strip())
        return None

    async def _run(
        self, script: _Script, commands: list[bytes], idempotent: bool = True, where: str = ""
    ) -> list[Any]:
        """Send script calls in one write; return their replies, raising the first error.

        Scripts that start jobs are not ``idempotent``: after a connection error they are not
        resent (``CommandLane.call`` raises ``ReplyLost``), and the worker calls ``recover``.
        After NOSCRIPT nothing ran, so every script is resent then.
        """
        n = len(commands)
        replies = await self._lane.call(commands, n, idempotent=idempotent)
        if any(isinstance(r, NoScriptError) for r in replies):
            await self._lane.call(pack("SCRIPT", "LOAD", script.source))
            replies = await self._lane.call(commands, n, idempotent=idempotent)
        for reply in replies:
            if isinstance(reply, Exception) and refused(reply):
                raise self._denied(script, where, reply) from reply
            if isinstance(reply, Exception):
                raise reply
        return replies

    def _denied(self, script: _Script, where: str, exc: Exception) -> Exception:
        return denied(self._user, f"run aioq's {script.name} script (EVALSHA) on {where}", exc)

    async def _call(
        self, script: _Script, keys: Sequence[Any], args: Sequence[Any], idempotent: bool = True
    ) -> Any:
        where = _keys_of(keys[0])
        return (await self._run(script, [script.command(keys, args)], idempotent, where))[0]

    async def enqueue(
        self,
        batches: Sequence[tuple[QueueKeys, Sequence[Any]]],
        before: Sequence[bytes] = (),
        limits: Mapping[str, int] | None = None,
        durable: bool = False,
    ) -> list[list[Any] | tuple[int, bytes]]:
        """Enqueue jobs in one round trip; one reply per batch, in order.

        ``batches`` pairs a queue with its jobs, each the ENQUEUE_ARGS values of one job. A
        batch's reply is its jobs' outcomes (1 written, 0 the id existed, or bytes: the id of
        the job holding its dedup key), or, for a queue with a limit in ``limits`` (by queue
        name) that the jobs would take past it, ``(size, newest recent id)``: nothing of that
        batch was written (``queue_limits.py``). A batch to a limited queue is one EVALSHA, so
        it is written all or none; other batches go ENQUEUE_CHUNK jobs per EVALSHA. All are
        safe to resend after an ambiguous network error. ``before``: packed commands that go
        first in the same write (idempotent ones: a workflow's records), replies dropped.
        ``durable``: each script call is followed on its connection by ``WAIT 1`` (which
        waits for this connection's writes so far), and ``NotDurable`` is raised when a
        replica did not acknowledge them within ``DURABLE_TIMEOUT``.
        """
        commands: list[bytes] = list(before)
        owners: list[int] = []
        wait = pack("WAIT", 1, round(_enqueue_module.DURABLE_TIMEOUT * 1000))
        for b, (keys, jobs) in enumerate(batches):
            limit = limits.get(keys.queue, 0) if limits else 0
            step = max(1, len(jobs)) if limit else ENQUEUE_CHUNK
            for i in range(0, len(jobs), step):
                chunk = jobs[i : i + step]
                argv: list[Any] = [limit]
                for job in chunk:
                    argv += job
                job_keys = [keys.job(job[0]) for job in chunk]
                commands.append(self._enqueue.command([*keys.declared, *job_keys], argv))
                owners.append(b)
                if durable:  # behind its script: in a cluster, on the same master
                    commands.append(wait)
        out: list[list[Any] | tuple[int, bytes]] = [[] for _ in batches]
        replicas: list[int] = []
        where = ", ".join(_keys_of(keys.stream) for keys, _ in batches)
        replies = (await self._run(self._enqueue, commands, where=where))[len(before) :]
        if durable:  # every other reply is a WAIT's: how many replicas acknowledged
            replicas, replies = replies[1::2], replies[::2]
        for b, reply in zip(owners, replies, strict=True):
            if reply and isinstance(reply[0], list):  # refused: {{size, recent id}}
                out[b] = (int(reply[0][0]), reply[0][1])
            else:
                done = out[b]
                assert isinstance(done, list)
                done += reply
        if durable and replicas and min(replicas) < 1:
            ids = [str(job[0]) for _, jobs in batches for job in jobs]
            raise NotDurable(ids, min(replicas))
        return out

    async def enqueue_one(self, keys: QueueKeys, job: Sequence[Any]) -> Any:
        """``enqueue`` of one job into a queue without a limit: its outcome."""
        command = self._enqueue.command([*keys.declared, keys.job(job[0])], [0, *job])
        return (await self._run(self._enqueue, [command], where=_keys_of(keys.stream)))[0][0]

    async def cron(
        self,
        keys: QueueKeys,
        state: str,
        tick_ms: int,
        fire: bool,
        job: Sequence[Any],
        ran: str | None = None,
    ) -> int:
        """Fire (or only mark) one cron tick; 1 when its job was written (then ``ran``, the
        schedule's ``cron_ran`` key, holds the tick)."""
        written: int = await self._call(
            self._cron,
            [*keys.declared, keys.job(job[0]), state, *([ran] if ran else [])],
            [tick_ms, "fire" if fire else "mark", *job],
        )
        return written

    async def wait_and_start(
        self,
        keys: QueueKeys,
        worker: WorkerArgs,
        count: int,
        block_ms: int,
        newest: Sequence[bytes],
    ) -> tuple[list[Any], bool]:
        """Park in XREADGROUP on every priority's stream until entries arrive (or
        ``block_ms``), and start up to ``count`` of them: the read and START_NEW go in one
        write on one connection, so it is one round trip. Returns the started jobs, and
        whether more may wait (False: the queue was drained, park again without a FETCH).

        ``newest`` holds, per priority, the newest entry id this worker had seen there. The read
        takes one entry per stream; START_NEW reads on when jobs wait at one level only, and
        a burst at several is fetched next, in priority order.
        """
        streams = [level.stream for level in keys.levels]
        start_args = [*worker.args, count, *newest]
        commands = [
            pack("XREADGROUP", "GROUP", GROUP, worker.args[1], "COUNT", 1,
                 "BLOCK", block_ms, "STREAMS", *streams, *(">" for _ in streams)),
            self._start_new.command(keys.declared, start_args),
        ]  # fmt: skip
        read, started = await self._lane.call(commands, 2, idempotent=False)
        if isinstance(read, Exception) and refused(read):
            action = f"read its streams (XREADGROUP) of {_keys_of(keys.stream)}"
            raise denied(self._user, action, read) from read
        if isinstance(started, Exception) and refused(started):
            raise self._denied(self._start_new, _keys_of(keys.stream), started) from started
        if isinstance(started, NoScriptError):  # a restarted Redis: load, then start them
            await self._lane.call(pack("SCRIPT", "LOAD", START_NEW))
            started = await self._call(self._start_new, keys.declared, start_args, idempotent=False)
        if isinstance(read, Exception):
            if "NOGROUP" not in str(read):
                raise read
            # a stream or group is gone (Redis restarted without its data, or a key deleted)
            await self._lane.call(_create_groups(keys), len(streams))
        if isinstance(started, Exception):
            raise started
        rows, more = started
        return rows, bool(more)

    async def fetch(self, keys: QueueKeys, worker: WorkerArgs, count: int, turn: int) -> list[Any]:
        """Start up to ``count`` queued jobs, highest priority first; ``turn``: how many this
        worker has started from the queue so far (see FETCH)."""
        rows: list[Any] = await self._call(
            self._fetch, keys.declared, [*worker.args, count, turn], idempotent=False
        )
        return rows

    async def recover(self, keys: QueueKeys, worker: WorkerArgs) -> list[Any]:
        """Every job this worker holds in Redis on the queue, as started-job rows (see
        RECOVER): after a lost reply, the worker runs those it does not run yet."""
        rows: list[Any] = await self._call(self._recover, keys.declared, worker.args)
        return rows

    async def reclaim(
        self,
        keys: QueueKeys,
        worker: WorkerArgs,
        min_idle_ms: int,
        count: int,
        cursors: Sequence[bytes],
    ) -> tuple[list[bytes], list[Any], list[Any]]:
        """Start up to ``count`` jobs whose lease lapsed; ``cursors``: where each priority's
        scan goes on. Returns the next cursors, the started jobs, and the rows of this
        worker's own idle entries (never restarted, see RECLAIM)."""
        cur, rows, held = await self._call(
            self._reclaim,
            keys.declared,
            [*worker.args, min_idle_ms, count, *cursors],
            idempotent=False,
        )
        return cur, rows, held

    async def complete(
        self, keys: QueueKeys, worker: WorkerArgs, records: list[Any]
    ) -> tuple[list[bytes], list[list[bytes]]]:
        """Write the outcomes of jobs of one stream (``keys``' priority); the fenced ids, and
        the hand-overs of the workflow jobs it finished (``handover.lua``)."""
        fenced, handed = await self._call(
            self._complete, keys.declared, [*worker.args, keys.priority, *records]
        )
        return fenced, handed

    async def flow(
        self, records: dict[QueueKeys, list[Any]], result_ttl: int
    ) -> list[tuple[QueueKeys, list[bytes]]]:
        """Apply hand-over records (FLOW_ARGS values each) to the steps of each queue, every
        queue's in FLOW_CHUNK-record calls, all in one round trip; the hand-overs that follow
        (of steps and joins they finished), with the queue each comes from."""
        commands: list[bytes] = []
        sources: list[QueueKeys] = []
        step = FLOW_ARGS * FLOW_CHUNK
        for keys, values in records.items():
            for i in range(0, len(values), step):
                commands.append(
                    self._flow.command(keys.declared, [result_ttl, *values[i : i + step]])
                )
                sources.append(keys)
        out: list[tuple[QueueKeys, list[bytes]]] = []
        for keys, reply in zip(sources, await self._run(self._flow, commands), strict=True):
            out += [(keys, row) for row in reply]
        return out

    async def sweep(self, keys: QueueKeys, min_age_ms: int, limit: int) -> list[list[bytes]]:
        """The hand-overs left in the queue's outbox for ``min_age_ms`` (see SWEEP)."""
        rows: list[list[bytes]] = await self._call(self._sweep, keys.declared, [min_age_ms, limit])
        return rows

    async def handed_over(self, done: dict[QueueKeys, list[bytes]]) -> None:
        """Take hand-overs that were passed on out of their queues' outboxes."""
        commands = [pack("ZREM", keys.flows, *ids) for keys, ids in done.items() if ids]
        if commands:
            for reply in await self._lane.call(commands, len(commands)):
                if isinstance(reply, Exception):
                    raise reply

    async def take_handed(self, keys: QueueKeys, worker: WorkerArgs) -> list[Any]:
        """The broadcast copies other workers handed to this one on the queue, as started-job
        rows (see TAKE); each hand-over is returned once."""
        rows: list[Any] = await self._call(
            self._take, [*keys.declared, keys.handed(worker.args[1])], worker.args
        )
        return rows

    async def renew(self, keys: QueueKeys, consumer: str, entry_ids: list[Any]) -> list[bytes]:
        lost: list[bytes] = await self._call(
            self._renew, [keys.stream], [GROUP, consumer, *entry_ids]
        )
        return lost

    async def release_all(self, keys: QueueKeys, consumer: str) -> int:
        streams = [level.stream for level in keys.levels]
        n: int = await self._call(self._release_all, [*streams, keys.guard], [GROUP, consumer])
        return n

    async def promote(
        self, keys: QueueKeys, result_ttl: int, limit: int = 1000
    ) -> tuple[int, int, int]:
        moved, next_due, now = await self._call(self._promote, keys.declared, [limit, result_ttl])
        return int(moved), int(next_due), int(now)

    async def cancel(self, keys: QueueKeys, job_id: str, result_ttl: int) -> int:
        n: int = await self._call(
            self._cancel, [*keys.declared, keys.job(job_id)], [job_id, result_ttl]
        )
        return n

    async def cancel_many(
        self, jobs: Sequence[tuple[QueueKeys, str]], result_ttl: int
    ) -> list[int]:
        """``cancel`` of many jobs in one round trip; their outcomes in order."""
        commands = [
            self._cancel.command([*keys.declared, keys.job(jid)], [jid, result_ttl])
            for keys, jid in jobs
        ]
        return await self._run(self._cancel, commands) if commands else []

    # -- operations (ops.py) ---------------------------------------------------------------

    async def requeue_dead(self, keys: QueueKeys, entry_ids: Sequence[str]) -> list[str]:
        """Requeue dead-letter entries as fresh attempts: one outcome each ("requeued", or
        why the entry stays)."""
        if not entry_ids:
            return []
        out: list[bytes] = await self._call(self._requeue_dead, keys.declared, list(entry_ids))
        return [o.decode(errors="replace") for o in out]

    async def retry(self, keys: QueueKeys, job_ids: Sequence[str]) -> list[str]:
        """Put failed jobs back as fresh attempts: one outcome each ("requeued", "missing",
        "not a job record", or the status of a job that is not failed)."""
        if not job_ids:
            return []
        out: list[bytes] = await self._call(self._retry, keys.declared, list(job_ids))
        return [o.decode(errors="replace") for o in out]

    async def purge(self, keys: QueueKeys, until: bytes, count: int) -> tuple[int, int]:
        """Delete up to ``count`` queued entries with ids up to ``until``, and their queued
        jobs' records: (entries scanned, jobs deleted)."""
        scanned, jobs = await self._call(
            self._purge, [keys.stream, keys.guard], [GROUP, until, count]
        )
        return int(scanned), int(jobs)

    async def purge_keyed(self, keys: QueueKeys, count: int, result_ttl: int) -> tuple[int, int]:
        """Delete up to ``count`` jobs waiting for a place on their key, and their records:
        (list entries scanned, jobs deleted)."""
        scanned, jobs = await self._call(self._purge_keyed, keys.declared, [count, result_ttl])
        return int(scanned), int(jobs)

    async def heartbeat(
        self,
        keys: tuple[str, str],
        consumer: str,
        stats: bytes,
        ttl: int,
        done: int,
        reported: int,
    ) -> int:
        """Write a worker's stats stamped with Redis' time (epoch ms, returned), or remove them
        when ``stats`` is empty, and add the jobs it finished since its previous beat to the
        current throughput bucket. ``keys``: the app's workers and throughput hashes; ``done``
        the worker's finished jobs, ``reported`` that total at its last acknowledged beat."""
        now: int = await self._call(
            self._heartbeat, list(keys), [consumer, stats, ttl, done, reported]
        )
        return now


def _declare(key: str, limits: dict[str, str | None]) -> list[bytes]:
    """HSET each task's declared limits in hash ``key``, HDEL a task's that declares none."""
    return [
        pack("HDEL", key, task) if wire is None else pack("HSET", key, task, wire)
        for task, wire in limits.items()
    ]


def _keys_of(key: str) -> str:
    """The class of keys ``key`` belongs to, for messages: "the keys aioq:{shop:default}:*"."""
    tag_end = key.find("}:")
    return f"the keys {key[: tag_end + 2]}*" if tag_end > 0 else f"the key {key}"


def _create_groups(keys: QueueKeys) -> list[bytes]:
    """XGROUP CREATE for each of a queue's streams, at id 0 (nothing enqueued before is
    missed), creating the stream if need be; BUSYGROUP replies (it exists) are harmless."""
    return [pack("XGROUP", "CREATE", level.stream, GROUP, "0", "MKSTREAM") for level in keys.levels]


class WorkerArgs:
    """The ARGV prefix every worker-side script shares (see ``_PRELUDE`` in ``worker.py``)."""

    __slots__ = ("args",)

    def __init__(self, consumer: str, max_deliveries: int, result_ttl: int, dead_max: int) -> None:
        self.args = (GROUP, consumer, max_deliveries, result_ttl, dead_max)
