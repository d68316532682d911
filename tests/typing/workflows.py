"""Type-only checks of workflows, run by `mypy --strict` (never executed).

``.si()`` is checked like ``enqueue``; ``.s()`` against every parameter (a first step) or all
but the first (a later step, which gets the previous result); ``chain`` returns the last
step's handle, typed by its task; ``chord`` the callback's.
"""

from __future__ import annotations

from typing import Any, assert_type

from aioq import App, Call, GroupJob, Job, chain, chord, group

app = App("typing-workflows")


@app.task
async def add(x: int, y: int) -> int:
    return x + y


@app.task
async def label(n: int, prefix: str = "") -> str:
    return f"{prefix}{n}"


@app.task
async def tsum(values: list[int]) -> int:
    return sum(values)


async def workflows() -> None:
    assert_type(add.s(1, 2), Call[int])  # every parameter: a first step
    assert_type(add.s(10), Call[int])  # all but the first: a later step
    assert_type(add.si(1, 2), Call[int])
    add.si(1)  # type: ignore[call-arg]
    add.si("1", 2)  # type: ignore[arg-type]
    add.s(1, 2, 3)  # type: ignore[call-overload]

    job = await chain(add.s(1, 2), add.s(10), label.s(prefix="n=")).enqueue()
    assert_type(job, Job[str])
    assert_type(await job.result(timeout=1), str)

    g = await group(add.s(i, i) for i in range(3)).enqueue()
    assert_type(g, GroupJob)
    assert_type(await g.results(timeout=1), list[Any])
    assert_type(await g.progress(), tuple[int, int])

    c = await chord([add.s(i, i) for i in range(3)], tsum.s()).enqueue()
    assert_type(c, Job[int])
    ended = await chain(add.s(1, 2), group(add.s(1), add.s(2))).enqueue()
    assert_type(ended, GroupJob)

    await add.options(on_success=label.s(), on_failure=label.si(0)).enqueue(1, 2)
