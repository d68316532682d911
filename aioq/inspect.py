"""Read-only views of an app's queues for the CLI and the dashboard (one pipeline each)."""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.exceptions import ResponseError

from .app import App
from .job import JobStatus
from .keys import GROUP, PRIORITIES, workers_key


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts of one queue: ``queued`` waiting in the stream, ``running`` delivered and not
    finished, ``scheduled`` waiting for their time, ``failed`` finished failed (records not
    yet expired), ``dead`` in the dead-letter stream; ``paused`` by ``aioq pause``;
    ``by_priority``: of the queued, how many wait at each priority that has any."""

    queue: str
    queued: int
    running: int
    scheduled: int
    failed: int
    dead: int
    paused: bool
    by_priority: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def queue_stats(app: App, queues: list[str] | None = None) -> list[QueueStats]:
    names = queues or app.queues
    redis = app.redis
    # failures older than the result TTL have expired records (the index trims them lazily)
    since = (time.time() - app.result_ttl) * 1000 if app.result_ttl > 0 else "-inf"
    per_queue = 4 + 2 * PRIORITIES
    async with redis.pipeline(transaction=False) as pipe:
        for q in names:
            k = app.keys(q)
            pipe.zcard(k.scheduled)
            pipe.xlen(k.dead)
            pipe.zcount(k.failed, since, "+inf")
            pipe.exists(k.paused)
            for lane in k.lanes:  # one stream per priority
                pipe.xlen(lane.stream)
                pipe.xinfo_groups(lane.stream)
        replies = await pipe.execute(raise_on_error=False)
    out = []
    for i, q in enumerate(names):
        counts = replies[per_queue * i : per_queue * (i + 1)]
        scheduled, dead, failed, paused = counts[:4]
        if isinstance(scheduled, Exception):
            raise scheduled
        queued = running = 0
        by_priority: dict[int, int] = {}
        for level in range(PRIORITIES):
            length, groups = counts[4 + 2 * level : 6 + 2 * level]
            if isinstance(length, Exception):
                raise length
            lane_queued, lane_running = _lane_counts(int(length), groups)
            queued += lane_queued
            running += lane_running
            if lane_queued:
                by_priority[level] = lane_queued
        out.append(
            QueueStats(
                q, queued, running, int(scheduled), int(failed), int(dead), bool(paused),
                by_priority,
            )
        )  # fmt: skip
    return out


def _lane_counts(length: int, groups: list[dict[str, Any]] | Exception) -> tuple[int, int]:
    """(queued, running) of one stream from its length and XINFO GROUPS."""
    if isinstance(groups, ResponseError):  # no stream yet
        return length, 0
    if isinstance(groups, Exception):
        raise groups
    for g in groups:
        if g.get("name") in (GROUP, GROUP.encode()):
            running = int(g.get("pending") or 0)
            lag = g.get("lag")
            return (int(lag) if lag is not None else max(0, length - running)), running
    return length, 0


# -- workers ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A live worker as its last heartbeat described it (``worker/heartbeat.py``).

    ``uptime`` and ``last_beat`` are seconds as of the read; ``started_at`` is the worker's
    own clock (epoch seconds).
    """

    consumer: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    running: int
    done: int
    started_at: float
    uptime: float
    last_beat: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def worker_stats(app: App) -> list[WorkerInfo]:
    """The app's live workers, by consumer name. Entries whose worker has not beaten for
    ``STALE_AFTER`` seconds (it died without a clean stop) are dead: they are pruned."""
    from .worker.heartbeat import STALE_AFTER

    redis, key = app.redis, workers_key(app.name)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.time()
        pipe.hgetall(key)
        (secs, micros), raw = await pipe.execute()
    now_ms = secs * 1000 + micros // 1000
    live: list[WorkerInfo] = []
    dead: list[bytes] = []
    for consumer, data in raw.items():
        try:
            s = orjson.loads(data)
            ago = max(0.0, (now_ms - int(s["beat"])) / 1000)
            info = WorkerInfo(
                consumer=consumer.decode(errors="replace"),
                host=str(s.get("host", "")),
                pid=int(s.get("pid", 0)),
                queues=[str(q) for q in s.get("queues", [])],
                concurrency=int(s.get("concurrency", 0)),
                running=int(s.get("running", 0)),
                done=int(s.get("done", 0)),
                started_at=float(s.get("started_at", 0.0)),
                uptime=float(s.get("uptime", 0.0)) + ago,
                last_beat=ago,
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            dead.append(consumer)  # not a heartbeat: nothing will ever refresh it
            continue
        if ago > STALE_AFTER:
            dead.append(consumer)
        else:
            live.append(info)
    if dead:
        await redis.hdel(key, *dead)
    return sorted(live, key=lambda w: w.consumer)


# -- jobs -------------------------------------------------------------------------------------

_SUMMARY_FIELDS = (
    "status", "task", "queue", "attempts", "enqueued_at", "started_at", "finished_at",
    "error", "exc_type", "worker", "progress", "priority",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class JobSummary:
    """One row of a job listing (``Job.info()`` has the whole record)."""

    id: str
    queue: str
    task: str
    status: str
    attempts: int
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    exc_type: str | None
    worker: str | None
    progress: Any = None  # the last ``set_progress`` value (JSON), if any
    priority: int = 0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name in ("enqueued_at", "started_at", "finished_at"):
            d[name] = d[name].isoformat() if d[name] is not None else None
        return d


def _summary(job_id: str, queue: str, values: list[bytes | None]) -> JobSummary:
    v = dict(zip(_SUMMARY_FIELDS, values, strict=True))
    return JobSummary(
        id=job_id,
        queue=_text(v["queue"]) or queue,
        task=_text(v["task"]) or "",
        status=_text(v["status"]) or "",
        attempts=_int(v["attempts"]),
        enqueued_at=_ms(v["enqueued_at"]),
        started_at=_ms(v["started_at"]),
        finished_at=_ms(v["finished_at"]),
        error=_text(v["error"]),
        exc_type=_text(v["exc_type"]),
        worker=_text(v["worker"]),
        progress=_loads(v["progress"]),
        priority=_int(v["priority"]),
    )


async def list_jobs(
    app: App,
    *,
    status: JobStatus | Collection[JobStatus] | None = None,
    task: str | None = None,
    queues: list[str] | None = None,
    limit: int = 50,
) -> list[JobSummary]:
    """Up to ``limit`` jobs of the given queues (default: all), newest first; ``status`` is
    one status or several (jobs in any of them).

    Failed jobs alone come from the failed-jobs index, newest failure first. Any other
    listing SCANs the queues' job keys (cost grows with the number of records kept, i.e. with
    ``result_ttl``) and stops once ``limit`` jobs match.
    """
    wanted: set[str] | None = None
    if status is not None:
        wanted = {status.value} if isinstance(status, JobStatus) else {s.value for s in status}
        if not wanted:
            return []
    failed = wanted == {JobStatus.FAILED.value}
    names = queues or app.queues
    rows: list[JobSummary] = []
    for q in names:
        want = limit - len(rows) if not failed else limit
        if want <= 0:
            break
        if failed:
            rows += await _failed_jobs(app, q, task, want)
        else:
            rows += await _scanned_jobs(app, q, wanted, task, want)
    if failed:
        rows.sort(key=lambda r: r.finished_at or _EPOCH, reverse=True)
    else:
        rows.sort(key=lambda r: r.enqueued_at or _EPOCH, reverse=True)
    return rows[:limit]


_FINISHED = {s.value.encode() for s in JobStatus if s.finished}


async def recent_jobs(
    app: App, queues: list[str] | None = None, limit: int = 20
) -> list[JobSummary]:
    """Up to ``limit`` jobs their workers finished last (succeeded, failed or cancelled), most
    recent first, from each queue's ``recent`` stream (keys.py): no SCAN. Jobs whose records
    have expired are left out."""
    names = queues or app.queues
    redis = app.redis
    async with redis.pipeline(transaction=False) as pipe:
        for q in names:
            pipe.xrevrange(app.keys(q).recent, count=limit)
        batches: list[list[tuple[bytes, dict[bytes, bytes]]]] = await pipe.execute()
    wanted: dict[tuple[str, str], None] = {}  # (queue, job id), newest first, no repeats
    for q, entries in zip(names, batches, strict=True):
        n = 0
        for _, fields in entries:
            try:
                ids = orjson.loads(fields.get(b"ids", b"[]"))
            except orjson.JSONDecodeError:
                continue
            for jid in reversed(ids) if isinstance(ids, list) else ():
                if isinstance(jid, str) and n < limit and (q, jid) not in wanted:
                    wanted[q, jid] = None
                    n += 1
    async with redis.pipeline(transaction=False) as pipe:
        for q, jid in wanted:
            pipe.hmget(app.keys(q).job(jid), _SUMMARY_FIELDS)
        records = await pipe.execute()
    rows = [
        _summary(jid, q, values)
        for (q, jid), values in zip(wanted, records, strict=True)
        if values[0] in _FINISHED  # not since retried (or expired)
    ]
    rows.sort(key=lambda r: r.finished_at or _EPOCH, reverse=True)
    return rows[:limit]


async def _failed_jobs(app: App, queue: str, task: str | None, limit: int) -> list[JobSummary]:
    keys, redis = app.keys(queue), app.redis
    out: list[JobSummary] = []
    start, page = 0, max(limit, 100)
    while len(out) < limit:
        ids: list[bytes] = await redis.zrevrange(keys.failed, start, start + page - 1)  # type: ignore[assignment]
        if not ids:
            break
        start += page
        async with redis.pipeline(transaction=False) as pipe:
            for jid in ids:
                pipe.hmget(keys.job(jid.decode(errors="replace")), _SUMMARY_FIELDS)
            records = await pipe.execute()
        for jid, values in zip(ids, records, strict=True):
            row = _summary(jid.decode(errors="replace"), queue, values)
            if row.status == "failed" and (task is None or row.task == task):
                out.append(row)  # (expired, retried or requeued ids are skipped)
    return out[:limit]


async def _scanned_jobs(
    app: App, queue: str, statuses: set[str] | None, task: str | None, limit: int
) -> list[JobSummary]:
    keys, redis = app.keys(queue), app.redis
    prefix = keys.job_prefix
    match = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
    out: list[JobSummary] = []
    cursor: int = 0
    while True:
        found: list[bytes]
        cursor, found = await redis.scan(cursor, match=match, count=1000)  # type: ignore[assignment]
        if found:
            async with redis.pipeline(transaction=False) as pipe:
                for key in found:
                    pipe.hmget(key, _SUMMARY_FIELDS)
                records = await pipe.execute(raise_on_error=False)
            for key, values in zip(found, records, strict=True):
                if isinstance(values, Exception) or values[0] is None:
                    continue  # not a hash (another program's key), or gone meanwhile
                row = _summary(key.decode(errors="replace")[len(prefix) :], queue, values)
                if (statuses is None or row.status in statuses) and (
                    task is None or row.task == task
                ):
                    out.append(row)
        if cursor == 0 or len(out) >= limit:
            return out[:limit]


# -- the dead-letter stream ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of a queue's dead-letter stream (written by ``bury`` in scripts/worker.py).

    ``entry`` is its id in the dead-letter stream (what ``aioq dlq show/requeue`` take);
    ``stream_entry`` the id the job had on the queue's stream; ``fields`` the raw stream entry;
    ``job`` the job record as it was when buried (``None`` when there was none).
    """

    entry: str
    queue: str
    job_id: str | None
    task: str | None
    reason: str
    at: datetime | None
    stream_entry: str
    fields: dict[str, str] | list[Any]
    job: dict[str, str] | None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["at"] = self.at.isoformat() if self.at is not None else None
        return d


def _dead_letter(queue: str, entry_id: bytes, raw: dict[bytes, bytes]) -> DeadLetter:
    fields = _pairs(_loads(raw.get(b"fields")))
    job = _pairs(_loads(raw.get(b"job")))
    snapshot = job if isinstance(job, dict) else None
    return DeadLetter(
        entry=entry_id.decode(),
        queue=queue,
        job_id=_text(raw.get(b"id")),
        task=snapshot.get("task") if snapshot else None,
        reason=_text(raw.get(b"reason")) or "",
        at=_ms(raw.get(b"at")),
        stream_entry=_text(raw.get(b"entry")) or "",
        fields=fields if isinstance(fields, dict | list) else [],
        job=snapshot,
    )


async def dead_letters(
    app: App, queues: list[str] | None = None, limit: int = 100
) -> list[DeadLetter]:
    """The newest ``limit`` dead-letter entries of the given queues (default: all)."""
    names = queues or app.queues
    async with app.redis.pipeline(transaction=False) as pipe:
        for q in names:
            pipe.xrevrange(app.keys(q).dead, count=limit)
        replies = await pipe.execute()
    out = [_dead_letter(q, eid, raw) for q, r in zip(names, replies, strict=True) for eid, raw in r]
    out.sort(key=lambda d: _entry_order(d.entry), reverse=True)
    return out[:limit]


async def find_dead_letter(
    app: App, entry_id: str, queues: list[str] | None = None
) -> list[DeadLetter]:
    """The dead-letter entries with this id in the given queues (usually one, or none)."""
    names = queues or app.queues
    async with app.redis.pipeline(transaction=False) as pipe:
        for q in names:
            pipe.xrange(app.keys(q).dead, entry_id, entry_id)
        replies = await pipe.execute(raise_on_error=False)
    return [
        _dead_letter(q, eid, raw)
        for q, r in zip(names, replies, strict=True)
        if not isinstance(r, Exception)
        for eid, raw in r
    ]


# -- decoding ---------------------------------------------------------------------------------

_EPOCH = datetime.fromtimestamp(0, tz=UTC)


def _text(value: bytes | None) -> str | None:
    return value.decode(errors="replace") if value else None


def _int(value: bytes | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _ms(value: bytes | None) -> datetime | None:
    ms = _int(value)
    return datetime.fromtimestamp(ms / 1000, tz=UTC) if ms else None


def _loads(value: bytes | None) -> Any:
    """JSON written by Lua's cjson, which passes bytes that are not UTF-8 through as is."""
    if value is None:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        try:
            return orjson.loads(value.decode(errors="replace"))
        except orjson.JSONDecodeError:
            return None


def _pairs(value: Any) -> Any:
    """A flat [name, value, ...] list as a dict (cjson writes Redis replies that way)."""
    if isinstance(value, list) and len(value) % 2 == 0 and all(isinstance(v, str) for v in value):
        return dict(zip(value[::2], value[1::2], strict=True))
    return value


def _entry_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms or 0), int(seq or 0)


async def cron_stats(app: App) -> list[dict[str, Any]]:
    """Each cron schedule: its task and queue, the last tick handled and the next one (UTC)."""
    import time
    from datetime import UTC, datetime

    def iso(t: float | None) -> str | None:
        return None if t is None else datetime.fromtimestamp(t, UTC).isoformat()

    if not app.crons:
        return []
    async with app.redis.pipeline(transaction=False) as pipe:
        for s in app.crons:
            pipe.get(app.keys(app.tasks[s.task].queue).cron_state(s.name))
        states = await pipe.execute()
    now = time.time()
    return [
        {
            "schedule": s.name,
            "task": s.task,
            "queue": app.tasks[s.task].queue,
            "catch_up": s.catch_up,
            "last_tick": iso(None if state is None else int(state) / 1000),
            "next_tick": iso(s.next_after(now)),
        }
        for s, state in zip(app.crons, states, strict=True)
    ]


async def rate_limit_stats(app: App) -> list[dict[str, str]]:
    """The rate limits in force, per queue and task (run-time overrides win)."""
    out = []
    for q in app.queues:
        for task, limit in (await app.rate_limits(q)).items():
            out.append({"queue": q, "task": task, "limit": limit})
    return out
