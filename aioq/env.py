"""``App.from_env()``: every ``App`` option from an ``AIOQ_*`` environment variable.

One variable per option, named after it: ``AIOQ_`` and the option in capitals.

    AIOQ_NAME                 name               required (unless name= is given)
    AIOQ_REDIS_URL            redis_url          a Redis URL (App() itself reads it too)
    AIOQ_VISIBILITY_TIMEOUT   visibility_timeout seconds > 0
    AIOQ_RESULT_TTL           result_ttl         whole seconds >= 0 (0: kept for ever)
    AIOQ_MAX_DELIVERIES       max_deliveries     whole number >= 1
    AIOQ_DEFAULT_QUEUE        default_queue      a queue name
    AIOQ_DEAD_LETTER_MAX      dead_letter_max    whole number >= 0
    AIOQ_MAX_CONNECTIONS      max_connections    whole number >= 1
    AIOQ_WORKFLOW_TTL         workflow_ttl       whole seconds >= 1
    AIOQ_SIGNING_KEY          signing_key        the key as text (UTF-8); several: comma-separated,
                                                 the first signing
    AIOQ_QUEUE_LIMITS         queue_limits       queue=limit pairs, comma-separated:
                                                 "emails=10000,reports=50"
    AIOQ_ROUTES               routes             pattern=queue pairs, comma-separated, first
                                                 match wins: "emails.*=emails,reports.*=slow"

An unset or empty variable leaves the option's default (``VAR=`` in a compose file means
"not set"). A value that does not parse, or is out of range, is a ``ValueError`` naming the
variable and the value, so a bad deployment fails at start-up with the line to fix. A new
``App`` option gets a row in ``VARIABLES`` and a key in ``AppOptions``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any, TypedDict

from .connection import check_url
from .keys import validate_name


class AppOptions(TypedDict, total=False):
    """The keyword arguments of ``App.from_env`` (those of ``App()``)."""

    name: str
    redis_url: str | None
    visibility_timeout: float
    result_ttl: int
    max_deliveries: int
    default_queue: str
    dead_letter_max: int
    max_connections: int
    workflow_ttl: int
    signing_key: bytes | list[bytes] | None
    queue_limits: dict[str, int] | None
    routes: dict[str, str] | None


Parser = Callable[[str, str], Any]
"""(variable, raw value) -> the option's value, or a ``ValueError`` naming both."""


def _seconds(variable: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{variable}={raw!r}: expected a number of seconds > 0")
    return value


def _whole(minimum: int, note: str = "") -> Parser:
    def parse(variable: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise ValueError(f"{variable}={raw!r}: expected a whole number >= {minimum}{note}")
        return value

    return parse


def _name(kind: str) -> Parser:
    def parse(variable: str, raw: str) -> str:
        try:
            return validate_name(kind, raw)
        except ValueError as exc:
            raise ValueError(f"{variable}: {exc}") from None

    return parse


def _signing_keys(variable: str, raw: str) -> bytes | list[bytes]:
    keys = [k.strip().encode() for k in raw.split(",")]
    if not all(keys):
        raise ValueError(f"{variable}: an empty key between commas (give non-empty keys)")
    return keys[0] if len(keys) == 1 else keys


def _pairs(variable: str, raw: str, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in raw.split(","):
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not name or not value:
            raise ValueError(f"{variable}={raw!r}: expected {what} pairs, comma-separated")
        out[name] = value
    return out


def _limits(variable: str, raw: str) -> dict[str, int]:
    from .queue_limits import check_limits

    pairs = _pairs(variable, raw, "queue=limit")
    try:
        return check_limits({q: int(v) for q, v in pairs.items()})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{variable}={raw!r}: {exc} (expected queue=limit, limit >= 1)") from None


def _routes(variable: str, raw: str) -> dict[str, str]:
    from .routes import Routes

    pairs = _pairs(variable, raw, "pattern=queue")
    try:
        Routes(pairs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{variable}={raw!r}: {exc}") from None
    return pairs


def _url(variable: str, raw: str) -> str:
    return check_url(raw, variable)  # its message names the variable, the password hidden


#: option -> (variable, parser)
VARIABLES: dict[str, tuple[str, Parser]] = {
    "name": ("AIOQ_NAME", _name("app")),
    "redis_url": ("AIOQ_REDIS_URL", _url),
    "visibility_timeout": ("AIOQ_VISIBILITY_TIMEOUT", _seconds),
    "result_ttl": ("AIOQ_RESULT_TTL", _whole(0, " (seconds; 0 keeps records for ever)")),
    "max_deliveries": ("AIOQ_MAX_DELIVERIES", _whole(1)),
    "default_queue": ("AIOQ_DEFAULT_QUEUE", _name("queue")),
    "dead_letter_max": ("AIOQ_DEAD_LETTER_MAX", _whole(0)),
    "max_connections": ("AIOQ_MAX_CONNECTIONS", _whole(1)),
    "workflow_ttl": ("AIOQ_WORKFLOW_TTL", _whole(1)),
    "signing_key": ("AIOQ_SIGNING_KEY", _signing_keys),
    "queue_limits": ("AIOQ_QUEUE_LIMITS", _limits),
    "routes": ("AIOQ_ROUTES", _routes),
}


def options_from_env(
    overrides: dict[str, Any], environ: dict[str, str] | None = None
) -> dict[str, Any]:
    """``App()``'s keyword arguments: ``overrides`` (given explicitly, they win), then the
    variables that are set and not empty; a bad value is a ``ValueError`` naming its
    variable."""
    env = os.environ if environ is None else environ
    unknown = set(overrides) - set(VARIABLES)
    if unknown:
        raise TypeError(
            f"App.from_env() got unknown option(s) {', '.join(sorted(unknown))} "
            f"(App's options: {', '.join(VARIABLES)})"
        )
    options = dict(overrides)
    for option, (variable, parse) in VARIABLES.items():
        raw = env.get(variable, "")
        if option in options or not raw:
            continue
        options[option] = parse(variable, raw)
    if "name" not in options:
        raise ValueError("App.from_env(): set AIOQ_NAME (the app's name) or pass name=")
    return options
