"""Passing a workflow on: each finished step tells its successors, exactly once.

Successors on the finished job's own queue are told in the very script that finishes it
(``complete.lua`` with ``tell.lua``: one slot, one atomic step; a chain on one queue, or a
group's members beside their join, never leave Redis). Successors on other queues (other
cluster slots) cannot be: no one script may touch two slots. For those (``canvas.py`` has the
data):

1. the script that finishes a job with successors also puts it into its queue's outbox
   (``keys.flows``): finishing and remembering to tell are one atomic step;
2. whoever finished it (the worker, or ``cancel_workflow`` here) then tells each successor's
   queue with FLOW (``flow.lua``), where every record is idempotent: a held step starts
   only while it is held, a group's join counts a member's outcome once under its index;
3. only then is the job taken out of its outbox. Whatever FLOW finished in turn (a cancelled
   step, a fired join) is in its own queue's outbox and is passed on the same way.

A worker that dies between 1 and 3 leaves the entry in the outbox; every worker sweeps the
outboxes of its queues (``worker/flows.py``) and passes on what has waited there longer than
``SWEEP_AFTER``. Telling twice is harmless by step 2, so a transition is never lost and
never done twice, however the crash falls.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from .keys import QueueKeys

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("aioq.workflow")

SWEEP_AFTER = 10.0  # seconds a hand-over waits in an outbox before any worker passes it on

HandOver = tuple[QueueKeys, Sequence[bytes]]
"""A hand-over (``handover.lua``: id, status, then, payload) and the queue it comes from."""


async def hand_over(
    app: App, pending: Sequence[HandOver], left: list[HandOver] | None = None
) -> int:
    """Pass hand-overs on until nothing follows; how many were passed on.

    ``left``, when given, holds what is not passed on yet at every moment (the round under
    way), so a caller interrupted by an error or a cancellation can pass that on later
    instead of leaving what followed to the sweep."""
    passed = 0
    while pending:
        if left is not None:
            left[:] = pending
        records: dict[QueueKeys, list[Any]] = {}
        done: dict[QueueKeys, list[bytes]] = {}
        for source, (hid, status, then, payload) in pending:
            done.setdefault(source, []).append(hid)
            for a in _actions(then, hid):
                target = app.keys(a["q"])
                records.setdefault(target, []).extend(
                    (a["k"], a["id"], a.get("on", ""), a.get("pass", ""), a.get("i", 0),
                     status, hid, payload)
                )  # fmt: skip
        following = await app.scripts.flow(records, app.result_ttl) if records else []
        await app.scripts.handed_over(done)
        passed += len(pending)
        pending = following
    if left is not None:
        left.clear()
    return passed


def _actions(then: bytes, hid: bytes) -> list[dict[str, Any]]:
    try:
        actions = orjson.loads(then)
    except orjson.JSONDecodeError:
        actions = None
    if not isinstance(actions, list) or not all(
        isinstance(a, dict) and isinstance(a.get("q"), str) and isinstance(a.get("id"), str)
        for a in actions
    ):
        log.error("job %r has a 'then' that is not aioq's: %r; nothing follows it", hid, then)
        return []
    return actions


async def sweep(app: App, keys: QueueKeys, min_age: float | None = None) -> int:
    """Pass on what has waited in ``keys``' outbox for ``min_age`` seconds (default
    ``SWEEP_AFTER``); how many."""
    age = SWEEP_AFTER if min_age is None else min_age
    passed = 0
    while True:
        rows = await app.scripts.sweep(keys, round(age * 1000), 200)
        if not rows:
            return passed
        passed += await hand_over(app, [(keys, r) for r in rows])
        if len(rows) < 200:
            return passed


async def cancel_workflow(app: App, flow: str) -> int:
    """Cancel every step of the workflow ``flow`` ("<queue> <id>", a job's ``flow`` field)
    that has not finished; how many were cancelled (queued, scheduled, held or running)."""
    queue, _, flow_id = flow.partition(" ")
    raw = await app.redis.hget(app.keys(queue).flow(flow_id), "steps")
    steps = orjson.loads(raw) if raw else []
    jobs = [(q, i) for q, i, task in steps if task]
    cancelled = 0
    touched: set[str] = set()
    for i in range(0, len(jobs), 500):
        outcomes = await app.scripts.cancel_many(
            [(app.keys(q), jid) for q, jid in jobs[i : i + 500]], app.result_ttl
        )
        cancelled += sum(o > 0 for o in outcomes)
    touched.update(q for q, _ in jobs)
    touched.update(q for q, i, task in steps if not task)
    # what the cancels finished waits in the outboxes: pass it on now, so the groups fire
    for q in sorted(touched):
        await sweep(app, app.keys(q), min_age=0)
    return cancelled
