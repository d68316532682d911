"""Seeing a workflow: ``views.workflow_of`` (every step's status, from any of its jobs, its
groups or its own id), ``aioq job ID`` listing the steps (``--json`` too), and the dashboard's
``api/jobs/{id}``. The page's drawer is checked in a real browser in ``test_dashboard.py``."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from redis.asyncio.connection import AbstractConnection

from aioq import App, JobNotFound, JobStatus, Worker, chain, chord, group, views
from aioq.dashboard import dashboard

from .apps.ops import make_app
from .conftest import unique_name
from .helpers import eventually
from .test_ops_cli import aioq, in_thread

pytestmark = pytest.mark.anyio


@pytest.fixture
async def ops(redis_url: str) -> AsyncIterator[App]:
    """The CLI's app (tests.apps.ops: queues default and emails) with a chord's callback."""
    app = make_app(unique_name(), redis_url)

    @app.task
    async def tsum(values: list[int]) -> int:
        return sum(values)

    @app.task
    async def bad(x: int) -> int:
        raise ValueError(f"member {x} is bad")

    yield app
    await app.aclose()


@contextmanager
def round_trips() -> Iterator[list[int]]:
    """Count the writes to Redis sockets meanwhile: one per command or pipeline sent."""
    sent = [0]
    original = AbstractConnection.send_packed_command

    async def counted(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        sent[0] += 1
        await original(self, command, check_health)

    AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


async def test_steps_of_a_chain_with_a_group_from_any_of_its_ids(ops: App) -> None:
    """add -> group(add, add, send on 'emails') -> tsum: before a worker, the first step is
    queued and the rest held; after, all succeeded, the group 3/3; the same view from a
    member, the group's id and the workflow's id; a plain job has none."""
    add, send, tsum = ops.tasks["add"], ops.tasks["send"], ops.tasks["tsum"]
    job = await chain(add.s(1, 2), group(add.s(1), add.s(2), add.s(3)), tsum.s()).enqueue()
    before = await views.workflow_of(ops, job.id)
    assert before is not None
    kinds = [(s.task, s.status, s.wait_reason) for s in before.steps]
    assert kinds == [
        ("add", "queued", None), (None, "pending", None),
        *[("add", "scheduled", "workflow")] * 3, ("tsum", "scheduled", "workflow"),
    ]  # fmt: skip
    assert (before.total, before.groups, before.listed_all) == (6, 1, True)
    assert before.by_status == {"queued": 1, "scheduled": 4}
    assert [s.result for s in before.steps] == [False] * 5 + [True]
    plain = await send.enqueue("someone")

    async with Worker(ops, queues=["default", "emails"]):
        assert await job.result(timeout=10) == (3 + 1) + (3 + 2) + (3 + 3)
    after = await views.workflow_of(ops, job.id)
    assert after is not None
    assert after.id == before.id
    assert after.by_status == {"succeeded": 5}
    join = after.steps[1]
    assert (join.task, join.status, join.done, join.total) == (None, "succeeded", 3, 3)
    assert all(s.started_at and s.finished_at for s in after.steps if s.task)
    assert (await job.info()).workflow == after.id
    for other in (after.steps[0].id, after.steps[3].id, join.id, after.id):
        seen = await views.workflow_of(ops, other)
        assert seen is not None
        assert seen.as_dict() == after.as_dict()
    d = after.as_dict()
    assert [s["kind"] for s in d["steps"]] == ["job", "group", "job", "job", "job", "job"]
    json.dumps(d)  # JSON-ready

    assert await views.workflow_of(ops, plain.id) is None
    with pytest.raises(JobNotFound):
        await views.workflow_of(ops, "no-such-id")
    with pytest.raises(JobNotFound):  # in another queue than the one asked about
        await views.workflow_of(ops, job.id, "emails")


async def test_a_big_chord_is_counted_not_listed_and_failures_are_listed(ops: App) -> None:
    """A chord of 120 where member 99 fails: the first 10 steps listed, then the failed one
    and the cancelled callback (the workflow's result); every step counted by status."""
    add, bad, tsum = ops.tasks["add"], ops.tasks["bad"], ops.tasks["tsum"]
    members = [bad.s(i) if i == 99 else add.s(i, i) for i in range(120)]
    job = await chord(members, tsum.s()).enqueue()
    async with Worker(ops, concurrency=50):
        with pytest.raises(Exception, match="member 99 is bad"):
            await job.result(timeout=20)

        async def settled() -> views.Workflow | None:
            # the callback is cancelled at the first failure; the members running then go on
            f = await views.workflow_of(ops, job.id, limit=10)
            busy = f is None or {"queued", "running"} & set(f.by_status)
            return None if busy else f

        flow = await eventually(settled, 20, "every member of the chord finished")
    assert flow is not None
    assert (flow.total, flow.groups, flow.listed_all) == (122, 1, False)
    # the callback is cancelled at the first failure; members still running then finish
    assert flow.by_status == {"succeeded": 119, "failed": 1, "cancelled": 1}
    assert [s.index for s in flow.steps] == [*range(10), 100, 121]
    failed, callback = flow.steps[-2:]
    assert (failed.task, failed.status, failed.exc_type) == ("bad", "failed", "ValueError")
    assert failed.error == "member 99 is bad"
    assert (callback.task, callback.status, callback.result) == ("tsum", "cancelled", True)
    assert flow.steps[0].status == "failed"
    assert flow.steps[0].task is None


async def test_a_group_of_10000_reads_in_three_round_trips(ops: App) -> None:
    """The view of a 10,000-member group lists 50 and counts all, in three round trips: the
    id's records, the workflow's record, every step's HMGET pipelined."""
    add = ops.tasks["add"]
    g = await group(add.s(i, i) for i in range(10_000)).enqueue()
    members = await views.workflow_of(ops, g.id)  # warm: the connection pool is open
    t0 = time.perf_counter()
    with round_trips() as sent:
        flow = await views.workflow_of(ops, g.id)
    took = time.perf_counter() - t0
    assert members is not None
    assert flow is not None
    assert sent[0] == 3
    assert (flow.total, len(flow.steps), flow.by_status) == (10_001, 50, {"queued": 10_000})
    assert (flow.steps[0].task, flow.steps[0].total, flow.steps[0].result) == (None, 10_000, True)
    print(f"workflow_of on a group of 10,000: {took * 1000:.0f} ms")
    assert took < 5  # generous: a slow shared machine; it takes ~0.1-0.3 s here
    await g.cancel()


def cells(stdout: str) -> dict[str, list[str]]:
    """The rows of the tables ``aioq job`` printed, by their second cell (a field's name or
    a step's id), each as its stripped cells."""
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in stdout.splitlines()]
    return {r[1] if len(r) > 2 else r[0]: r for r in rows if len(r) >= 2}


async def test_aioq_job_lists_the_steps_and_json_has_them(ops: App) -> None:
    """add -> chord(3 x add, tsum) -> send on 'emails': ``aioq job`` of a member lists the
    seven steps, the member marked; ``--json`` of the group's id has them; ``--steps``
    caps the listing and says so."""
    add, send, tsum = ops.tasks["add"], ops.tasks["send"], ops.tasks["tsum"]
    job = await chain(add.s(1, 1), chord([add.s(i) for i in range(3)], tsum.s()), send.si("x")
                      ).enqueue()  # fmt: skip
    flow = await views.workflow_of(ops, job.id)
    assert flow is not None
    first, join, member = flow.steps[0].id, flow.steps[1].id, flow.steps[3].id
    r = await in_thread("job", "tests.apps.ops:app", member, app=ops)
    assert r.returncode == 0, r.stderr
    rows = cells(r.stdout)
    assert rows["workflow"] == ["workflow", flow.id]  # the job's fields say which workflow
    assert f"workflow {flow.id}: 7 steps, 1 group · queued 1, scheduled 5" in r.stdout
    assert rows[first] == ["1", first, "add", "default", "queued", ""]
    assert rows[join] == ["2", join, "group of 3", "default", "pending: 0/3 done", ""]
    assert rows[member] == ["4", member, "add", "default", "scheduled (workflow)", "this"]
    last = flow.steps[-1].id
    assert rows[last] == ["7", last, "send", "emails", "scheduled (workflow)", "result"]
    assert "listed" not in r.stdout  # all of them

    async with Worker(ops, queues=["default", "emails"]):
        assert await job.result(timeout=10) == "sent to x"
    r = await in_thread("job", "tests.apps.ops:app", join, "--json", app=ops)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)  # a group's id: no job record, its workflow
    assert (out["id"], out["workflow"]) == (join, flow.id)
    steps = out["workflow_steps"]["steps"]
    assert [(s["kind"], s["status"]) for s in steps] == [
        ("job", "succeeded"), ("group", "succeeded"), *[("job", "succeeded")] * 5
    ]  # fmt: skip
    assert (steps[1]["done"], steps[1]["total"]) == (3, 3)
    assert (steps[-1]["result"], steps[-1]["task"]) == (True, "send")
    assert out["workflow_steps"]["by_status"] == {"succeeded": 6}

    r = await in_thread("job", "tests.apps.ops:app", job.id, "--steps", "2", app=ops)
    assert r.returncode == 0, r.stderr
    rows = cells(r.stdout)
    assert rows["status"] == ["status", "succeeded"]
    assert [k for k in (first, join, member, last) if k in rows] == [first, join, last]
    assert rows[last][-1] == "this, result"
    assert "3 of 7 steps listed: the first 2, then the failed ones and the workflow's" in r.stdout
    plain = await send.enqueue("y")
    r = aioq("job", "tests.apps.ops:app", plain.id, "--json", app=ops)
    assert (json.loads(r.stdout)["workflow"], json.loads(r.stdout)["workflow_steps"]) == (
        None,
        None,
    )
    r = aioq("job", "tests.apps.ops:app", plain.id, app=ops)
    assert r.returncode == 0
    assert "workflow" not in r.stdout


async def test_api_job_has_the_record_and_the_workflow(ops: App) -> None:
    add, tsum = ops.tasks["add"], ops.tasks["tsum"]
    job = await chord([add.s(i, i) for i in range(4)], tsum.s()).enqueue()
    async with Worker(ops):
        assert await job.result(timeout=10) == 12
    transport = httpx.ASGITransport(app=dashboard(ops))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.get(f"/api/jobs/{job.id}")
        assert r.status_code == 200
        body = r.json()
        assert (body["job"]["id"], body["job"]["status"], body["job"]["result"]) == (
            job.id, "succeeded", 12
        )  # fmt: skip
        w = body["workflow"]
        assert (w["total"], w["groups"], w["by_status"]) == (6, 1, {"succeeded": 5})
        assert [s["kind"] for s in w["steps"]] == ["group", *["job"] * 5]
        group_id = w["steps"][0]["id"]
        r = await client.get(f"/api/jobs/{group_id}")
        assert r.status_code == 200
        assert r.json()["job"] is None
        assert r.json()["workflow"] == w
        plain = await add.enqueue(1, 1)
        r = await client.get(f"/api/jobs/{plain.id}?queue=default")
        assert r.status_code == 200
        assert r.json()["workflow"] is None
        assert r.json()["job"]["status"] == "queued"
        r = await client.get("/api/jobs/nope")
        assert r.status_code == 404
        assert "no job 'nope'" in r.json()["error"]
        r = await client.get(f"/api/jobs/{job.id}?queue=elsewhere")
        assert r.status_code == 400


async def test_limit_must_not_be_negative(ops: App) -> None:
    with pytest.raises(ValueError, match="limit must be >= 0"):
        await views.workflow_of(ops, "x", limit=-1)


async def test_a_clean_stop_leaves_no_hand_over_in_the_outbox(ops: App) -> None:
    """A worker stopped right after a chord's members finished has passed on all it
    finished: the callback is queued (or done), the outbox empty. Repeated: the stop has to
    fall inside a hand-over (about half of the stops here)."""
    add, tsum = ops.tasks["add"], ops.tasks["tsum"]
    held = 0
    for _ in range(10):
        job = await chord([add.s(i, i) for i in range(3)], tsum.s()).enqueue()
        marker = await add.enqueue(0, 0)  # enqueued after the members: it finishes last
        async with Worker(ops):
            await marker.result(timeout=5)
        if await job.status() is JobStatus.SCHEDULED:  # the callback still held
            held += 1
    left = await ops.redis.zcard(ops.keys().flows)
    assert (held, left) == (0, 0)
