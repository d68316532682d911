"""Workflows: ``chain``, ``group`` and ``chord`` of task calls, and how they are enqueued.

A workflow is planned, then written, before any step runs:

* every step is a job with its id chosen here; a step that waits for others is written *held*
  (``scheduled``, wait "workflow", in no stream: ``enqueue_job.lua``) with its arguments;
* every job or join that others wait for carries ``then``, the JSON list of what to tell when
  it finishes: ``{"k": "start", "q", "id", "on": "ok"|"fail", "pass": "value"|"id"|"none"}``
  (start a held step, handing it the result or the failed job's id, or cancel it when ``on``
  does not match) or ``{"k": "join", "q", "id", "i"}`` (member ``i`` of a group finished);
* a group is a *join* record (``keys.flow``) counting its members' outcomes, by index, once
  each; when the last arrives (or the first failure, unless ``return_exceptions``) it fires
  and tells its own ``then`` (a chord's callback), with the list of results;
* the workflow's record (beside the job whose outcome is the workflow's) lists every step,
  so ``cancel()`` reaches them all and ``aioq job`` shows them.

Held steps and joins are written first, the steps that start at once last: a producer that
dies in between leaves only held records, which never run and expire (``workflow_ttl``).
How the hand-overs happen, exactly once, is ``handover.py``'s.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar, overload

import orjson

from .connection import pack
from .errors import QueueFull
from .queue_limits import room, wait_for_room
from .task import Call

if TYPE_CHECKING:
    from .app import App
    from .group_job import GroupJob
    from .job import Job

R = TypeVar("R")
J = TypeVar("J")

Step: TypeAlias = "Call[Any] | Chain[Any] | Group | Chord[Any]"
"""What a workflow is made of: task calls (``task.s()``/``task.si()``) and other workflows."""

__all__ = ["Chain", "Chord", "Group", "chain", "chord", "group"]


class Chain(Generic[J]):
    """Steps run one after the other, each (made with ``.s()``) receiving the previous one's
    result as its first argument; ``enqueue()`` returns the handle of the last step."""

    __slots__ = ("steps",)

    def __init__(self, steps: tuple[Step, ...]) -> None:
        if not steps:
            raise ValueError("chain() needs at least one step")
        for i, s in enumerate(steps):
            _check_step(s, f"chain() step {i}")
        self.steps = steps

    def __repr__(self) -> str:
        return f"chain({', '.join(map(repr, self.steps))})"

    async def enqueue(self) -> J:
        """Write every step (the first ones start at once); returns the last step's ``Job``
        (a ``GroupJob`` when the chain ends with a group), whose result is the chain's."""
        app = _app_of(self)
        handle: J = await _enqueue(app, self)
        return handle


class Group:
    """Steps run side by side; ``enqueue()`` returns a ``GroupJob`` whose ``results()`` are
    theirs in member order."""

    __slots__ = ("members",)

    def __init__(self, members: tuple[Step, ...]) -> None:
        if not members:
            raise ValueError("group() needs at least one member (it was empty)")
        for i, m in enumerate(members):
            _check_step(m, f"group() member {i}")
        self.members = members

    def __repr__(self) -> str:
        return f"group({', '.join(map(repr, self.members[:3]))}{', ...' * (len(self.members) > 3)})"

    async def enqueue(self) -> GroupJob:
        """Write every member (all start at once); returns the ``GroupJob``."""
        handle: GroupJob = await _enqueue(_app_of(self), self)
        return handle


class Chord(Generic[R]):
    """A group and a callback that receives the list of the members' results (member order)
    as its first argument, once every member has succeeded.

    A failed member (after its retries) cancels the callback, whose job then raises
    ``TaskFailed`` naming the member; with ``return_exceptions=True`` the callback runs anyway
    and each failed member's place in the list holds ``{"failed": {"step", "task",
    "exc_type", "error"}}`` (``{"failed": {..., "cancelled": true}}`` for one cancelled).
    """

    __slots__ = ("body", "header", "return_exceptions")

    def __init__(self, header: Group, body: Call[R], return_exceptions: bool = False) -> None:
        if not isinstance(body, Call):
            raise TypeError(f"chord() callback must be a task's call (task.s()), got {body!r}")
        self.header = header
        self.body = body
        self.return_exceptions = return_exceptions

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"

    async def enqueue(self) -> Job[R]:
        """Write the members (they start at once) and the held callback; returns the
        callback's ``Job``, whose result is the chord's."""
        handle: Job[R] = await _enqueue(_app_of(self), self)
        return handle


@overload
def chain(a: Call[R] | Chord[R], /) -> Chain[Job[R]]: ...
@overload
def chain(a: Group, /) -> Chain[GroupJob]: ...
@overload
def chain(a: Step, b: Call[R] | Chord[R], /) -> Chain[Job[R]]: ...
@overload
def chain(a: Step, b: Group, /) -> Chain[GroupJob]: ...
@overload
def chain(a: Step, b: Step, c: Call[R] | Chord[R], /) -> Chain[Job[R]]: ...
@overload
def chain(a: Step, b: Step, c: Group, /) -> Chain[GroupJob]: ...
@overload
def chain(a: Step, b: Step, c: Step, d: Call[R] | Chord[R], /) -> Chain[Job[R]]: ...
@overload
def chain(a: Step, b: Step, c: Step, d: Group, /) -> Chain[GroupJob]: ...
@overload
def chain(*steps: Step) -> Chain[Any]: ...


def chain(*steps: Step) -> Chain[Any]:
    """``chain(a.s(1), b.s(), c.s(2))``: ``c(b(a(1)), 2)``, each step once the one before has
    succeeded. A group as a step runs side by side and hands on the list of its results (a
    group followed by a step is a chord)."""
    return Chain(tuple(steps))


def group(*members: Step | Iterable[Step]) -> Group:
    """``group(a.s(1), a.s(2))`` or ``group(a.s(i) for i in range(10))``: run side by side."""
    if len(members) == 1 and not isinstance(members[0], Call | Chain | Group | Chord):
        return Group(tuple(members[0]))
    return Group(tuple(members))  # type: ignore[arg-type]


def chord(
    header: Group | Iterable[Step], body: Call[R], *, return_exceptions: bool = False
) -> Chord[R]:
    """``chord([add.s(i, i) for i in range(10)], tsum.s())``: the callback gets the list."""
    return Chord(header if isinstance(header, Group) else group(header), body, return_exceptions)


def _check_step(step: object, where: str) -> None:
    if not isinstance(step, Call | Chain | Group | Chord):
        raise TypeError(
            f"{where} is {step!r}: a workflow is made of task calls (task.s(...) or "
            "task.si(...)) and chain/group/chord"
        )


def _app_of(step: Step) -> App:
    while not isinstance(step, Call):
        if isinstance(step, Chain):
            step = step.steps[0]
        elif isinstance(step, Group):
            step = step.members[0]
        else:
            step = step.body
    return step.task.app


# -- planning -------------------------------------------------------------------------------


@dataclass(eq=False)
class _Node:
    """A job or a join the plan writes; ``then`` what it tells when it finishes."""

    id: str
    queue: str
    call: Call[Any] | None = None  # None: a join
    held: bool = False
    piped: bool = False  # gets its predecessor's value as first argument
    then: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0  # a join's members
    mode: str = "fast"  # a join: "fast" fires at the first failure, "collect" waits for all


class _Plan:
    def __init__(self, app: App) -> None:
        self.app = app
        self.flow_id = os.urandom(12).hex()
        self.nodes: list[_Node] = []

    def place(self, step: Step, preds: list[_Node], on: str = "ok") -> _Node:
        """Add ``step`` after ``preds`` (which tell it when they finish); its exit node, the
        one whose outcome is the step's."""
        if isinstance(step, Call):
            return self._call(step, preds, on)
        if isinstance(step, Chain):
            exit_ = self.place(step.steps[0], preds, on)
            for s in step.steps[1:]:
                exit_ = self.place(s, [exit_])
            return exit_
        if isinstance(step, Chord):
            join = self._group(step.header, preds, on, step.return_exceptions)
            return self.place(step.body, [join])
        return self._group(step, preds, on, False)

    def _call(self, call: Call[Any], preds: list[_Node], on: str) -> _Node:
        if call.task.broadcast:
            raise TypeError(
                f"{call!r}: a broadcast task cannot be a workflow step or callback (it runs "
                "once per worker, and a workflow hands on one result)"
            )
        node = _Node(call.options.job_id or os.urandom(16).hex(), call.queue, call, bool(preds))
        node.piped = bool(preds) and not call.immutable
        passing = "none" if call.immutable else ("id" if on == "fail" else "value")
        for p in preds:
            p.then.append({"k": "start", "q": node.queue, "id": node.id, "on": on, "pass": passing})
        self.nodes.append(node)
        if call.options.on_success is not None:
            self._call(call.options.on_success, [node], "ok")
        if call.options.on_failure is not None:
            self._call(call.options.on_failure, [node], "fail")
        return node

    def _group(self, g: Group, preds: list[_Node], on: str, collect: bool) -> _Node:
        join = _Node(f"{self.flow_id}.g{len(self.nodes)}", "", total=len(g.members))
        join.mode = "collect" if collect else "fast"
        self.nodes.append(join)
        for i, m in enumerate(g.members):
            exit_ = self.place(m, preds, on)
            exit_.then.append({"k": "join", "q": "", "id": join.id, "i": i})
        # the join lives beside its first member's exit (any queue would do; this spreads
        # groups over the slots of their queues)
        join.queue = self._first_queue(g.members[0])
        for n in self.nodes:
            for a in n.then:
                if a["k"] == "join" and a["id"] == join.id:
                    a["q"] = join.queue
        return join

    def _first_queue(self, step: Step) -> str:
        while not isinstance(step, Call):
            if isinstance(step, Chain):
                step = step.steps[-1]
            elif isinstance(step, Group):
                step = step.members[0]
            else:
                step = step.body
        return step.queue


async def enqueue_call_with_callbacks(app: App, call: Call[R]) -> Job[R]:
    """A single call with ``on_success``/``on_failure``: the callbacks are held steps."""
    handle: Job[R] = await _enqueue(app, call, workflow=False)
    return handle


async def _enqueue(app: App, step: Step, workflow: bool = True) -> Any:
    from .group_job import GroupJob
    from .job import Job

    plan = _Plan(app)
    result = plan.place(step, [])
    flow = f"{result.queue} {plan.flow_id}" if workflow else ""
    hold = app.workflow_ttl
    held: list[tuple[str, list[Any]]] = []
    heads: list[tuple[str, list[Any]]] = []
    waits: dict[str, list[float | None]] = {}  # the heads' wait_if_full, by queue
    records: list[bytes] = []
    steps: list[list[str]] = []
    for n in plan.nodes:  # validated and encoded before anything is sent
        then = orjson.dumps(n.then) if n.then else b""
        if n.call is None:
            key = app.keys(n.queue).flow(n.id)
            records.append(
                pack("HSET", key, "total", n.total, "done", 0, "mode", n.mode, "flow", flow,
                     *(("then", then) if then else ()))
            )  # fmt: skip
            records.append(pack("EXPIRE", key, hold + app.result_ttl))
            steps.append([n.queue, n.id, ""])
            continue
        prepared = n.call.prepare(
            job_id=n.id, piped=n.piped, then=then, flow=flow, hold=hold if n.held else None
        )
        (held if n.held else heads).append(prepared)
        if not n.held:
            waits.setdefault(prepared[0], []).append(n.call.options.wait_if_full)
        steps.append([n.queue, n.id, n.call.task.name])
    if workflow:
        key = app.keys(result.queue).flow(plan.flow_id)
        kind = "job" if result.call is not None else "group"
        records.append(
            pack("HSET", key, "steps", orjson.dumps(steps),
                 "result", orjson.dumps([kind, result.queue, result.id]))
        )  # fmt: skip
        records.append(pack("EXPIRE", key, hold + app.result_ttl))
    await _admit(app, waits)
    # first what waits (joins, held steps, the workflow's record), then what starts
    durable = any(n.call is not None and n.call.options.durable for n in plan.nodes)
    await app._send(_batches(app, held), held, before=records, limits=False, durable=durable)
    await app._send(_batches(app, heads), heads, limits=False, durable=durable)
    for queue, _ in held + heads:
        app._queues.add(queue)
    if result.call is None:
        return GroupJob(app, result.id, result.queue, result.total)
    return Job(app, result.id, result.queue)


async def _admit(app: App, waits: dict[str, list[float | None]]) -> None:
    """``queue_limits`` for a workflow: the steps that start at once must fit their queues,
    checked just before anything is written (waiting for room as long as the shortest of
    their ``wait_if_full``), else ``QueueFull`` and nothing is written. Not atomic with the
    writes, so workflows admitted at the same moment may take a queue past its limit by
    their first steps; later steps enter their queue when their predecessors start them."""
    for queue, asked in waits.items():
        limit = app.queue_limits.get(queue)
        if limit is None:
            continue
        keys = app.keys(queue)
        deadline = time.monotonic() + min((w or 0.0) for w in asked)
        while True:
            size, after = await room(app, keys)
            if size + len(asked) <= limit:
                break
            if not await wait_for_room(app, keys, after, deadline):
                raise QueueFull(queue, limit, size)


def _batches(app: App, prepared: list[tuple[str, list[Any]]]) -> list[tuple[Any, list[Any]]]:
    by_queue: dict[str, list[Any]] = {}
    for queue, job in prepared:
        by_queue.setdefault(queue, []).append(job)
    return [(app.keys(q), jobs) for q, jobs in by_queue.items()]
