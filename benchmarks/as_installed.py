"""Benchmarks measure aioq as most users install it: from a wheel, without the OpenTelemetry
SDK. Import this module first (before redis and aioq).

* Bytecode: installing a wheel compiles it, but this checkout is installed editable and the
  machine sets PYTHONDONTWRITEBYTECODE=1, so every process would compile aioq from source at
  start-up (~90 ms here) where the peers' and redis-py's installed packages do not. Importing
  this module writes aioq's bytecode once (compileall), for the benchmark and its children.
* OpenTelemetry: the dev venv holds ``opentelemetry-sdk`` for the tracing tests, and redis-py 8
  imports it whenever it is installed (redis/observability), which adds 50-90 ms to the
  start-up of every process that imports redis (aioq's workers and the raw ceiling's alike)
  and turns on aioq's tracing check. This module hides it from the benchmark's own process,
  and ``child_env`` from the processes it spawns.
"""

from __future__ import annotations

import compileall
import importlib.util
import os
import sys
from pathlib import Path

HOOK = Path(__file__).resolve().parent / "as_installed"  # its sitecustomize.py hides OTel too

sys.modules.setdefault("opentelemetry", None)  # type: ignore[arg-type]

_spec = importlib.util.find_spec("aioq")  # honours PYTHONPATH (a snapshot of another commit)
if _spec is not None and _spec.origin is not None:
    compileall.compile_dir(str(Path(_spec.origin).parent), quiet=1)


def child_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a spawned process, with OpenTelemetry hidden from it too."""
    path = env.get("PYTHONPATH")
    return {**env, "PYTHONPATH": str(HOOK) + (os.pathsep + path if path else "")}
