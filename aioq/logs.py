"""``aioq worker --log-format json``: every log record as one JSON object per line.

Keys: ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, every ``extra=`` field of
the record, and ``exc_info`` with the formatted traceback when there is one. The ``aioq.jobs``
lines carry their figures as keys: the INFO summary ``event`` ("summary"), ``seconds``,
``jobs_per_s``, ``finished``, ``succeeded``, ``failed``, ``retried``, ``cancelled``,
``running``, and (read from Redis) ``queued``, ``scheduled`` and ``queues`` (per queue:
queued, scheduled, running, dead); the DEBUG per-job lines ``event`` ("start", "finish"),
``job_id``, ``task``, ``queue``, ``attempt``, and on finish ``outcome`` and ``duration`` in
seconds (see ``aioq/metrics.py``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

# attributes every LogRecord has: anything else on a record came from `extra=`
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (orjson; values it cannot encode become str)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc_info"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return orjson.dumps(out, default=str).decode()
