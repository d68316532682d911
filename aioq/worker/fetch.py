"""Fetching: one XREADGROUP per batch, sized to the free slots.

With a backlog, the ``fetch`` script reads and starts a whole batch in one round trip, highest
priority first (each priority has its own stream, see ``keys.py``). When the queue is empty the
fetcher parks in a blocking XREADGROUP on those streams (no polling) and starts what it delivers
with the ``start`` script. Before reading, the fetcher takes over lapsed leases with the slots
it holds (``lease.Reclaimer``).

The scripts that start jobs are never resent after a connection error: Redis may have run them,
and a second run would start another batch while the first waited a whole visibility timeout.
The fetcher asks Redis what this worker holds instead (``Scripts.recover``) and runs what it
does not run yet.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from ..connection import ReplyLost
from ..keys import PRIORITIES, QueueKeys
from .lease import Reclaimer, holding, orphans

if TYPE_CHECKING:
    from .core import Worker

log = logging.getLogger("aioq.worker")

CONTENDED_BLOCK_MS = 20  # parked this long at most while another fetcher waits for a slot
BLOCK_MS = 2_000  # a parked fetcher wakes this often to notice new queues or a stop


async def fetch_loop(worker: Worker, keys: QueueKeys) -> None:
    slots, runner = worker.slots, worker.runner
    reclaimer = Reclaimer(worker, keys)
    # per priority, the newest entry this fetcher has started: parked reads start what follows
    newest = [b"0-0"] * PRIORITIES
    turn = 0  # jobs started from this queue: places each fetch in the fairness rotation
    delay = 0.05
    recover = False  # a reply that started jobs was lost: find them before reading on
    drained = False  # the parked read's start found nothing more: park again, no FETCH
    while True:
        n = await slots.take(worker.fetch_size)
        if worker.stopping:  # take nothing more (the stop path cancels this loop next)
            slots.give(n)
            return
        if keys.queue in worker.paused and not recover:  # `aioq pause`: take nothing new
            slots.give(n)
            await worker.paused.wait_resumed(worker, keys)
            continue
        started = 0
        try:
            if recover:
                before = holding(worker, keys)
                held = await worker.app.scripts.recover(keys, worker.script_args)
                recover = False
                lost = orphans(worker, keys, held, before)
                if len(lost) > n:  # more than this round's slots: run them all the same
                    slots.overdraw(len(lost) - n)
                    n = len(lost)
                runner.start(keys, lost)
                _advance(newest, lost)
                started = len(lost)
                continue
            # lapsed leases first (when due), then new entries, with the slots we hold
            taken = await reclaimer.reclaim(n)
            runner.start(keys, taken)
            _advance(newest, taken)
            started = len(taken)
            rows = []
            if started < n and not drained:
                rows = await worker.app.scripts.fetch(keys, worker.script_args, n - started, turn)
                _advance(newest, rows)
                turn += len(rows)
            drained = False
            if not rows and not started:
                worker.idle.add(keys)
                if worker.burst:
                    slots.give(n)
                    n = 0
                    await worker.wake.wait()
                    worker.wake.clear()
                    # looking again: not idle until that look finds nothing (else a burst
                    # worker could stop while this fetch is on its way with a job)
                    worker.idle.discard(keys)
                    continue
                # parked no longer than the next reclaim is due (BLOCK 0 would mean for ever)
                block_ms = max(1, min(BLOCK_MS, round(reclaimer.due_in() * 1000)))
                if slots.contended:  # another queue waits for the slots we hold: take turns
                    block_ms = min(block_ms, CONTENDED_BLOCK_MS)
                rows, more = await worker.app.scripts.wait_and_start(
                    keys, worker.script_args, n, block_ms, newest
                )
                drained = bool(rows) and not more
                _advance(newest, rows)
                turn += len(rows)
                if rows:
                    started += len(rows)
                    runner.start(keys, rows)
                    # let the new jobs begin before this loop's next round trip (latency),
                    # and let an outcome they wrote at once (a quick job on an idle queue)
                    # reach Redis before the next read: Redis answers both before it sends
                    # the job's notification, so the read would delay whoever awaits it
                    await asyncio.sleep(0)
                    await worker.completer.settled()
                    rows = []
            worker.idle.discard(keys)
            started += len(rows)
            runner.start(keys, rows)
            delay = 0.05
        except ReplyLost as exc:
            recover = True
            log.warning("fetching from %s: %s; recovering what it started", keys.queue, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        except (RedisError, OSError) as exc:  # any: ending this loop would fetch nothing more
            log.warning("fetching from %s failed (%s); retrying in %.2fs", keys.queue, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        finally:
            slots.give(n - started)


def _advance(newest: list[bytes], rows: list[Any]) -> None:
    """Move each priority's newest entry id on to the newest of ``rows`` there (row[8] is the
    priority; stream ids are ``<ms>-<seq>``, and a batch is not in stream order: fair turns
    sit at their places in it)."""
    for row in rows:
        priority, entry_id = row[8], row[0]
        if _id_key(entry_id) > _id_key(newest[priority]):
            newest[priority] = entry_id


def _id_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)
