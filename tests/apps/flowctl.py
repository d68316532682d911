"""An app for the flow-control tests (dedup, queue limits, routes, broadcast), run by worker
subprocesses and, as a producer, by ``python -m tests.apps.flowctl MODE N``:

    unique N   N concurrent ``unique_add.options(unique_for=60)`` enqueues of the same call
    fill N     N concurrent enqueues into the "bounded" queue (limit 60)

each printing one JSON line: the job ids it got (unique), or how many were written and how
many refused with ``QueueFull`` (fill).

    AIOQ_TEST_APP   app name (the test's ``app`` fixture name)
    AIOQ_TEST_VT    visibility_timeout in seconds
"""

from __future__ import annotations

import asyncio
import os
import sys

import orjson

from aioq import App, QueueFull

BOUNDED_LIMIT = 60

app = App(
    os.environ.get("AIOQ_TEST_APP", "flowctl"),
    visibility_timeout=float(os.environ.get("AIOQ_TEST_VT", "5")),
    queue_limits={"bounded": BOUNDED_LIMIT},
    routes={"emails.*": "emails", "reports.build": "slow"},
)


@app.task
async def unique_add(x: int, y: int) -> int:
    return x + y


@app.task(queue="bounded")
async def bounded(i: int) -> int:
    return i


@app.task(name="emails.send")
async def send_email(to: str) -> str:
    return f"sent to {to}"


@app.task(name="reports.build")
async def build_report(n: int) -> int:
    return n * 2


@app.task(broadcast=True, queue="fanout")
async def whoami(tag: str) -> list[object]:
    """Which process ran this copy (a worker's consumer name carries its pid)."""
    return [os.getpid(), tag]


async def _produce(mode: str, n: int) -> dict[str, object]:
    async with app:
        if mode == "unique":
            call = unique_add.options(unique_for=60)
            jobs = await asyncio.gather(*(call.enqueue(1, 2) for _ in range(n)))
            return {"ids": sorted({j.id for j in jobs})}
        outcomes = await asyncio.gather(
            *(bounded.enqueue(i) for i in range(n)), return_exceptions=True
        )
        refused = sum(isinstance(o, QueueFull) for o in outcomes)
        errors = [
            repr(o)
            for o in outcomes
            if isinstance(o, BaseException) and not isinstance(o, QueueFull)
        ]
        return {"written": n - refused - len(errors), "refused": refused, "errors": errors}


if __name__ == "__main__":
    mode, count = sys.argv[1], int(sys.argv[2])
    print(orjson.dumps(asyncio.run(_produce(mode, count))).decode())
