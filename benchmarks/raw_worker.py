"""The ceiling: a bare redis-py asyncio + hiredis consumer (as shared/bench peer_raw.py).

    python raw_worker.py --concurrency 100
    python raw_worker.py --rpc

XREADGROUP COUNT <= min(free slots, 100), each entry run as an asyncio task, one XACK per
batch of finished ids. No retries, results, timeouts, leases or recovery: what a Python
Redis-streams worker can approach.

``--rpc``: the floor of a round trip (bench_worker.py). Blocked in XREADGROUP on ``raw:rpc``;
each entry is acknowledged and its id published on ``raw:done`` in one pipelined write, as
aioq's complete script acknowledges and publishes in one call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal

import bench_record as rec
import redis.asyncio as aredis
from redis.exceptions import ResponseError

STREAM = "raw:tasks"
GROUP = "raw"


async def noop() -> None:
    rec.started()
    rec.done()


async def lat(i: int) -> None:
    rec.lat(i)


async def worker(concurrency: int) -> None:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    loop.add_signal_handler(signal.SIGTERM, main.cancel)
    loop.add_signal_handler(signal.SIGINT, main.cancel)
    r = aredis.from_url(rec.REDIS_URL)
    try:
        await r.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise
    consumer = f"c{os.getpid()}"
    acks: list[bytes] = []
    wake = asyncio.Event()
    inflight = 0
    tasks: set[asyncio.Task[None]] = set()

    def finished(t: asyncio.Task[None], msg_id: bytes) -> None:
        nonlocal inflight
        inflight -= 1
        tasks.discard(t)
        acks.append(msg_id)
        wake.set()

    try:
        while True:
            if acks:
                ids, acks = acks, []
                await r.xack(STREAM, GROUP, *ids)
            free = concurrency - inflight
            if free <= 0:
                wake.clear()
                await wake.wait()
                continue
            resp = await r.xreadgroup(
                GROUP,
                consumer,
                {STREAM: ">"},
                count=min(free, 100),
                block=None if inflight else 1000,
            )
            if not resp:
                if inflight:
                    wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), 0.1)
                continue
            for _stream, entries in resp:
                for msg_id, fields in entries:
                    coro = noop() if fields[b"t"] == b"noop" else lat(int(fields[b"i"]))
                    t = asyncio.create_task(coro)
                    inflight += 1
                    tasks.add(t)
                    t.add_done_callback(lambda t, m=msg_id: finished(t, m))
    except asyncio.CancelledError:
        pass
    finally:
        await r.aclose()


RPC_STREAM, RPC_DONE = "raw:rpc", "raw:done"


async def rpc_consumer() -> None:
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, main.cancel)
    loop.add_signal_handler(signal.SIGINT, main.cancel)
    r = aredis.from_url(rec.REDIS_URL)
    try:
        await r.xgroup_create(RPC_STREAM, GROUP, id="0", mkstream=True)
    except ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise
    try:
        while True:
            resp = await r.xreadgroup(GROUP, "c", {RPC_STREAM: ">"}, count=1, block=0)
            for _stream, entries in resp:
                for msg_id, _fields in entries:
                    async with r.pipeline(transaction=False) as p:
                        p.xack(RPC_STREAM, GROUP, msg_id)
                        p.publish(RPC_DONE, msg_id)
                        await p.execute()
    except asyncio.CancelledError:
        pass
    finally:
        await r.aclose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--rpc", action="store_true", help="the round trip's floor (see above)")
    args = ap.parse_args()
    asyncio.run(rpc_consumer() if args.rpc else worker(args.concurrency))


if __name__ == "__main__":
    main()
