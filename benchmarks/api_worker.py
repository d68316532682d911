"""The aioq worker started through the API instead of the CLI.

    python api_worker.py --concurrency 100 [--burst]

What ``aioq worker bench_tasks:app`` does (aioq/cli/worker.py) without the command line, and
with Python's logging left unconfigured, as in an app that embeds ``Worker`` and sets up no
logging (warnings and errors only): the difference in start-up between the two is the CLI's
cost, the difference in throughput what the CLI's default INFO logging costs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from bench_tasks import app

from aioq import Worker


async def serve(concurrency: int, burst: bool) -> None:
    w = Worker(app, concurrency=concurrency, burst=burst)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, w.stop)
    try:
        await w.run()
    finally:
        await app.aclose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--burst", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args.concurrency, args.burst))


if __name__ == "__main__":
    main()
