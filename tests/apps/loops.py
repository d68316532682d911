"""An app whose one task reports the event loop it runs in (``tests/test_worker_loop.py``);
its name comes from $AIOQ_APP_NAME so each test is isolated."""

from __future__ import annotations

import asyncio
import os

from aioq import App

app = App(os.environ.get("AIOQ_APP_NAME", "loops"))


@app.task
async def which_loop() -> str:
    """The module of the running loop's class: "uvloop" or "asyncio.unix_events"."""
    return type(asyncio.get_running_loop()).__module__
