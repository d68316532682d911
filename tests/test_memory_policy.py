"""A Redis that evicts keys when full loses jobs: the worker warns at start."""

from __future__ import annotations

import logging

import pytest

from aioq import App, Worker
from tests.conftest import unique_name
from tests.servers import redis_process

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("policy", ["allkeys-lru", "noeviction"])
async def test_worker_warns_when_redis_may_evict(
    policy: str, caplog: pytest.LogCaptureFixture
) -> None:
    """maxmemory-policy other than noeviction: one WARNING naming it; noeviction: none."""
    with redis_process(None, "--maxmemory-policy", policy) as server:
        app = App(unique_name(), redis_url=server.url())
        with caplog.at_level(logging.WARNING, logger="aioq.worker"):
            await Worker(app, burst=True).run()
        await app.aclose()
    warned = [r.getMessage() for r in caplog.records if "maxmemory-policy" in r.getMessage()]
    if policy == "noeviction":
        assert warned == []
    else:
        assert warned == [
            f"Redis evicts keys when full (maxmemory-policy {policy}): an evicted job record "
            "or stream is a lost job; set maxmemory-policy noeviction on the Redis aioq uses"
        ]
