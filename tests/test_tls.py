"""TLS: a TLS-only redis-server that asks for client certificates (``tls-auth-clients yes``),
and producers, workers (in-process and the CLI), results, cancel, ``aioq info`` and the
blocking producer over ``rediss://`` with a CA file and a client certificate."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aioq import App, JobCancelled, JobStatus, RedisUnavailable, Worker
from tests.apps.secure import make_app
from tests.conftest import unique_name
from tests.helpers import ROOT, Spawned, eventually
from tests.servers import RedisProcess, make_certs, redis_process

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    certs = make_certs(tmp_path_factory.mktemp("certs"))
    with redis_process(certs) as server:
        yield server


def aioq(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [sys.executable, "-m", "aioq", *args],
        cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_url_checks_name_tls_parameters() -> None:
    """TLS parameters need rediss://, and a misspelt one is named with those that exist."""
    with pytest.raises(ValueError, match=r"ssl_ca_certs= is a TLS parameter, and TLS needs rediss"):
        App("a", redis_url="redis://localhost/0?ssl_ca_certs=/ca.pem")
    with pytest.raises(
        ValueError, match=r"unknown TLS parameter 'ssl_ca_cert' \(known: .*ssl_ca_certs"
    ):
        App("a", redis_url="rediss://localhost/0?ssl_ca_cert=/ca.pem")
    App("a", redis_url="rediss://localhost/0?ssl_ca_certs=/ca.pem&ssl_cert_reqs=required")


async def test_producer_worker_results_and_cancel_over_tls(tls: RedisProcess) -> None:
    """Enqueue, run, the pushed result (its own subscription connection), a retry, the
    cancel of a running job (the worker's cancel subscription) and the lease thread's own
    blocking connection, all over TLS."""
    app = make_app(unique_name(), tls.url())
    async with Worker(app, concurrency=4) as worker:
        assert worker._leases is not None
        assert await asyncio.to_thread(worker._leases._redis.ping) is True
        job = await app.tasks["add"].enqueue(2, 3)
        assert await job.result(timeout=10) == 5
        retried = await app.tasks["send"].enqueue("retry@x")
        assert await retried.result(timeout=10) == "sent to retry@x"
        assert (await retried.info()).attempts == 2
        napping = await app.tasks["nap"].enqueue(30)
        await eventually(lambda: _running(napping), 10, "the nap job running")
        assert await napping.cancel() is True
        with pytest.raises(JobCancelled):
            await napping.result(timeout=10)
    clients = await app.redis.client_list()
    assert clients  # the server answered CLIENT LIST over the TLS connection
    await app.aclose()


async def _running(job: object) -> bool:
    return await job.status() is JobStatus.RUNNING  # type: ignore[attr-defined,no-any-return]


async def test_cli_worker_info_and_sync_producer_over_tls(tls: RedisProcess) -> None:
    """`aioq worker` (a subprocess) runs jobs enqueued by the blocking producer over TLS;
    `aioq info` reads the queues over TLS."""
    name = unique_name()
    app = make_app(name, tls.url())
    env = {"AIOQ_APP_NAME": name}
    jobs = await asyncio.to_thread(lambda: [app.tasks["add"].enqueue_sync(i, i) for i in range(20)])
    spawned = Spawned()
    try:
        w = spawned.start("tests.apps.secure:app", tls.url(), env, "--concurrency", "8")
        results = await asyncio.to_thread(lambda: [j.result(timeout=20) for j in jobs])
        assert results == [2 * i for i in range(20)]
        assert w.alive
        info = await asyncio.to_thread(
            aioq, "info", "tests.apps.secure:app", "--json",
            env={**env, "AIOQ_REDIS_URL": tls.url()},
        )  # fmt: skip
        assert info.returncode == 0, info.stderr
        assert '"queue": "default"' in info.stdout
        w.signal(15)
        assert await w.exited(20) == 0
    finally:
        spawned.close()
    app.close()
    await app.aclose()


async def test_a_client_without_a_certificate_is_refused_clearly(tls: RedisProcess) -> None:
    """The server drops a client that shows no certificate; producers, the blocking client
    and the CLI say so, and how to fix it."""
    app = App(unique_name(), redis_url=tls.url(cert=False))
    with pytest.raises(RedisUnavailable, match="asks for a client certificate") as caught:
        await app.ping()
    assert "ssl_certfile=PATH&ssl_keyfile=PATH" in str(caught.value)
    with pytest.raises(RedisUnavailable, match="asks for a client certificate"):
        await asyncio.to_thread(app.enqueue_sync, "anything")
    await app.aclose()
    app.close()
    r = await asyncio.to_thread(
        aioq, "info", "tests.apps.secure:app", env={"AIOQ_REDIS_URL": tls.url(cert=False)}
    )
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert "asks for a client certificate" in r.stderr


async def test_plain_redis_url_and_missing_files_are_explained(tls: RedisProcess) -> None:
    """redis:// to a TLS-only port, and a CA file that is not there, each name the fix."""
    plain = App(unique_name(), redis_url=f"redis://127.0.0.1:{tls.port}/0")
    with pytest.raises(RedisUnavailable, match=r"speaks only TLS .* is it rediss://"):
        await plain.ping()
    await plain.aclose()
    missing = Path("/nonexistent/ca.crt")
    wrong = tls.url().replace(f"ssl_ca_certs={tls.certs.ca}", f"ssl_ca_certs={missing}")  # type: ignore[union-attr]
    app = App(unique_name(), redis_url=wrong)
    with pytest.raises(RedisUnavailable, match=rf"ssl_ca_certs: no such file '{missing}'"):
        await app.ping()
    await app.aclose()
