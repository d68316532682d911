"""Loaded at start-up by every process the benchmarks spawn (``as_installed.child_env`` puts
this folder first on PYTHONPATH): hides OpenTelemetry, see ``benchmarks/as_installed.py``."""

import sys

sys.modules.setdefault("opentelemetry", None)  # type: ignore[arg-type]
