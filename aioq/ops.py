"""Operations that change an app's queues, for the CLI and the dashboard: requeue dead-letter
entries, retry failed jobs, cancel, purge a queue, pause and resume it, prune dead workers'
heartbeats.

Each is atomic per job (one Lua script of ``scripts/ops.py``), so running one while workers run
is safe: a job is never both requeued and running, and a purge never touches an entry a worker
holds. Read-only views are in ``views.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

from .app import App
from .keys import workers_key
from .views import stale_workers

REQUEUED = "requeued"
DEAD_BATCH = 200  # dead-letter entries per script call of requeue_all_dead
PURGE_BATCH = 1000  # stream entries per script call of purge_queue


async def locate(app: App, job_ids: Sequence[str], queue: str | None = None) -> list[str | None]:
    """The queue of each job id (``None``: in none of the app's queues), in one round trip."""
    names = [queue] if queue else app.queues
    async with app.redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            for q in names:
                pipe.exists(app.keys(q).job(job_id))
        found = await pipe.execute()
    out: list[str | None] = []
    for i, _ in enumerate(job_ids):
        hits = [q for q, hit in zip(names, found[i * len(names) :], strict=False) if hit]
        out.append(hits[0] if hits else None)
    return out


async def retry(app: App, job_ids: Sequence[str], queue: str | None = None) -> dict[str, str]:
    """Put failed jobs back on their queue as fresh attempts; one outcome per id: "requeued",
    "missing", or the status of a job that is not failed (left alone)."""
    out: dict[str, str] = {}
    by_queue: dict[str, list[str]] = {}
    for job_id, q in zip(job_ids, await locate(app, job_ids, queue), strict=True):
        if q is None:
            out[job_id] = "missing"
        else:
            by_queue.setdefault(q, []).append(job_id)
    for q, ids in by_queue.items():
        out.update(zip(ids, await app.scripts.retry(app.keys(q), ids), strict=True))
    return {job_id: out[job_id] for job_id in job_ids}


async def cancel(app: App, job_ids: Sequence[str], queue: str | None = None) -> dict[str, str]:
    """Cancel jobs as ``job.cancel()`` does; one outcome per id: "cancelled" (it will never
    run), "cancelling" (running: its worker cancels it within a second), "finished" (nothing
    changed) or "missing"."""
    codes = {1: "cancelled", 2: "cancelling", 0: "finished", -1: "missing"}
    out: dict[str, str] = {}
    for job_id, q in zip(job_ids, await locate(app, job_ids, queue), strict=True):
        if q is None:
            out[job_id] = "missing"
        else:
            code = await app.scripts.cancel(app.keys(q), job_id, app.result_ttl)
            out[job_id] = codes.get(code, str(code))
    return out


async def requeue_dead(app: App, queue: str, entry_ids: Sequence[str]) -> dict[str, str]:
    """Requeue dead-letter entries of one queue as fresh attempts; one outcome per entry id:
    "requeued" (the entry is removed) or why it stays."""
    outcomes = await app.scripts.requeue_dead(app.keys(queue), entry_ids)
    return dict(zip(entry_ids, outcomes, strict=True))


async def requeue_all_dead(app: App, queues: Sequence[str] | None = None) -> dict[str, str]:
    """Requeue every dead-letter entry of the given queues (default: all), oldest first; one
    outcome per ``"<queue> <entry id>"``."""
    out: dict[str, str] = {}
    for q in queues or app.queues:
        keys = app.keys(q)
        start = "-"
        while True:
            rows: list[tuple[bytes, object]] = await app.redis.xrange(  # type: ignore[assignment]
                keys.dead, start, "+", count=DEAD_BATCH
            )
            if not rows:
                break
            ids = [eid.decode() for eid, _ in rows]
            for eid, outcome in (await requeue_dead(app, q, ids)).items():
                out[f"{q} {eid}"] = outcome
            start = "(" + ids[-1]  # what stays is skipped, not read again
    return out


async def purge_dead(app: App, queues: Sequence[str] | None = None) -> int:
    """Delete the dead-letter streams of the given queues (default: all); entries deleted."""
    names = list(queues or app.queues)
    # not MULTI: each queue's stream is in its own cluster slot (an entry buried between the
    # count and the delete is deleted uncounted)
    async with app.redis.pipeline(transaction=False) as pipe:
        for q in names:
            pipe.xlen(app.keys(q).dead)
            pipe.delete(app.keys(q).dead)
        replies = await pipe.execute()
    return sum(int(n) for n in replies[::2])


async def purge_queue(app: App, queue: str) -> tuple[int, int]:
    """Delete a queue's queued entries (never those delivered to a worker) and the records of
    their jobs; returns (entries deleted, jobs deleted). Entries added after the call began
    are left alone. Every priority's stream is purged, and first the jobs waiting for a place
    on their concurrency key (counted as entries too; those enqueued meanwhile as well)."""
    entries = jobs = 0
    while True:  # first: no waiting job may take the place of one purged below
        scanned, deleted = await app.scripts.purge_keyed(
            app.keys(queue), PURGE_BATCH, app.result_ttl
        )
        if not scanned:
            break
        entries += scanned
        jobs += deleted
    for keys in app.keys(queue).levels:
        last: list[tuple[bytes, object]] = await app.redis.xrevrange(keys.stream, count=1)  # type: ignore[assignment]
        if not last:
            continue
        until = last[0][0]
        while True:
            scanned, deleted = await app.scripts.purge(keys, until, PURGE_BATCH)
            if not scanned:
                break
            entries += scanned
            jobs += deleted
    return entries, jobs


async def pause(app: App, queues: Sequence[str]) -> None:
    """Workers take no new jobs from these queues (running ones finish) until ``resume``."""
    async with app.redis.pipeline(transaction=False) as pipe:
        for q in queues:
            pipe.set(app.keys(q).paused, "1")
        await pipe.execute()


async def resume(app: App, queues: Sequence[str]) -> None:
    """Undo ``pause``: workers take jobs from these queues again (within half a second)."""
    async with app.redis.pipeline(transaction=False) as pipe:
        for q in queues:
            pipe.delete(app.keys(q).paused)
        await pipe.execute()


async def prune_workers(app: App) -> int:
    """Delete the heartbeats of workers that died without a clean stop (silent for
    ``STALE_AFTER`` seconds; a clean stop removes its own); returns how many. ``aioq info``
    and the dashboard call it, so the workers hash does not grow with every crashed worker.
    """
    # not atomic with the read: a worker silent for 6 s that beats in between loses its
    # entry until its next heartbeat (2 s), which rewrites it
    stale = await stale_workers(app)
    if stale:
        await app.redis.hdel(workers_key(app.name), *stale)
    return len(stale)
