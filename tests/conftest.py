"""Shared fixtures: one real redis-server per test session (unix socket, nothing on disk),
and a fresh ``App`` per test whose unique name isolates its keys, so no test flushes Redis."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from aioq import App
from aioq.embedded import EmbeddedRedis


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    # redis-py's client is asyncio-only; every async test module sets `pytestmark = anyio`
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def app(redis_url: str) -> AsyncIterator[App]:
    a = App(unique_name(), redis_url=redis_url, visibility_timeout=5.0)
    yield a
    await a.aclose()


@pytest.fixture(autouse=True)
def _no_ambient_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    # tests name their Redis explicitly; a developer's AIOQ_REDIS_URL must not leak in
    if "AIOQ_REDIS_URL" in os.environ:
        monkeypatch.delenv("AIOQ_REDIS_URL")
