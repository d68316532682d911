"""Loaded at start-up by every process the benchmarks spawn (``without_otel.child_env`` puts
this folder first on PYTHONPATH): see ``benchmarks/without_otel.py``."""

import sys

sys.modules.setdefault("opentelemetry", None)  # type: ignore[arg-type]
