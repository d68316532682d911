"""Benchmarks measure aioq as most users install it: without the OpenTelemetry SDK.

The dev venv holds ``opentelemetry-sdk`` for the tracing tests, and redis-py 8 imports it
whenever it is installed (redis/observability), which adds 50-90 ms to the start-up of every
process that imports redis, aioq's workers and the raw ceiling's alike, and turns on aioq's
tracing check. Importing this module hides OpenTelemetry from the benchmark's own process
(import it before redis), and ``child_env`` from the processes it spawns.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HOOK = Path(__file__).resolve().parent / "without_otel"  # its sitecustomize.py does the same

sys.modules.setdefault("opentelemetry", None)  # type: ignore[arg-type]


def child_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a spawned process, with OpenTelemetry hidden from it too."""
    path = env.get("PYTHONPATH")
    return {**env, "PYTHONPATH": str(HOOK) + (os.pathsep + path if path else "")}
