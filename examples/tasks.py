"""The tasks the web examples enqueue, and the aioq ``App`` they belong to.

A separate worker process can run them too (from the repository root)::

    aioq worker examples.tasks:app

``App`` takes its Redis from ``$AIOQ_REDIS_URL`` when no ``redis_url`` is given, so the same
code runs against a laptop's Redis, CI's or production's without a change.
"""

import asyncio
import os

# pydantic (FastAPI's response models) needs typing_extensions' TypedDict before Python 3.12
from typing_extensions import TypedDict

from aioq import App, current_job

# The name namespaces every Redis key: apps sharing one Redis never see each other's jobs.
app = App(os.environ.get("AIOQ_APP_NAME", "shop"))

PRICES_CENTS = {"book": 1250, "lamp": 3000, "mug": 800}


class Receipt(TypedDict):
    """What ``place_order`` returns; results travel as JSON, so a TypedDict describes them."""

    order_id: str
    item: str
    quantity: int
    total_cents: int


@app.task(timeout=10)
async def place_order(item: str, quantity: int) -> Receipt:
    """Charge and book an order; the job id doubles as the order id."""
    if item not in PRICES_CENTS:
        # the job ends "failed" with this message; job.result() raises TaskFailed with it
        raise LookupError(f"no such item: {item!r}")
    await asyncio.sleep(0.05)  # stands for a call to the payment gateway
    return {
        "order_id": current_job().id,
        "item": item,
        "quantity": quantity,
        "total_cents": PRICES_CENTS[item] * quantity,
    }
