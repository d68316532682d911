"""Signed jobs: ``App(signing_key=...)`` puts an HMAC-SHA256 on every job it enqueues, and a
worker with a key runs only jobs whose signature checks out.

What is signed is what decides what runs: the app and queue the record lives in, the job id,
the task name, the arguments and kwargs (the JSON bytes as written), the retries and the
timeout. Binding the id and the queue means a signed record copied under another id, or into
another queue, does not verify, so someone who can write to Redis cannot replay a signed call
as a new job or make it run somewhere else. Each field goes into the message with its length
in front, so no two different jobs make the same message.

The signature is the ``sig`` field of the job record (hex). It is made once, where every job
is encoded (``Call.prepare`` in ``task.py``: enqueue, enqueue_many, cron ticks and anything
built on them), and checked once, where every started job is read (``Runner.start`` in
``worker/run.py``). Several keys rotate: the first signs, every one verifies.

Not signed: the status, counters, priority, delay and expiry, and the trace context; the
docs/deploying.md says what that leaves open.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

_VERSION = b"aioq-sig-1"
_DIGEST = hashlib.sha256


def signing_keys(value: object) -> tuple[bytes, ...]:
    """``App``'s ``signing_key``: bytes, or a non-empty list (or tuple) of bytes, the first
    the one that signs. ``TypeError`` for anything else, str included (a key is bytes: say
    ``key.encode()`` when it comes as text); ``ValueError`` for an empty key or list."""
    keys: list[object] = list(value) if isinstance(value, list | tuple) else [value]
    if not keys:
        raise ValueError("signing_key must not be an empty list: give at least one key")
    out: list[bytes] = []
    for i, key in enumerate(keys):
        where = "signing_key" if not isinstance(value, list | tuple) else f"signing_key[{i}]"
        if isinstance(key, str):
            raise TypeError(
                f"{where} must be bytes, got str: pass {where}.encode() (a key read from an "
                "environment variable or a file is text until encoded)"
            )
        if not isinstance(key, bytes | bytearray | memoryview):
            raise TypeError(
                f"{where} must be bytes (or a list of bytes keys, the first signing), "
                f"got {type(key).__name__}"
            )
        if not len(key):
            raise ValueError(f"{where} must not be empty")
        out.append(bytes(key))
    return tuple(out)


def job_message(
    app: str,
    queue: str,
    job_id: bytes,
    task: bytes | None,
    args: bytes | None,
    kwargs: bytes | None,
    retries: bytes | None,
    timeout: bytes | None,
    piped: bool = False,
) -> bytes:
    """The bytes a job's signature covers; the same on the enqueue side and the worker's (a
    field the record lacks counts as empty, so a removed field does not verify either).
    ``piped``: a workflow step that gets its predecessor's value as first argument (an
    ``input`` field); signed, so an ``input`` added to any other job does not verify."""
    a, q = app.encode(), queue.encode()
    t, ar, kw, r, to = task or b"", args or b"", kwargs or b"", retries or b"", timeout or b""
    # one format, not a loop: this runs for every job enqueued and every job started
    return b"%s%s %d:%s%d:%s%d:%s%d:%s%d:%s%d:%s%d:%s%d:%s" % (
        _VERSION, b" piped" if piped else b"", len(a), a, len(q), q, len(job_id), job_id,
        len(t), t, len(ar), ar, len(kw), kw, len(r), r, len(to), to,
    )  # fmt: skip


class Signer:
    """The keys of one app: ``sign`` with the first, ``verify`` against every one."""

    __slots__ = ("_pads",)

    def __init__(self, keys: tuple[bytes, ...]) -> None:
        # HMAC (RFC 2104) from two SHA-256 states keyed once per key, copied per job: about a
        # third of what keying ``hmac.new`` per job costs, half of copying a keyed ``hmac``
        # object (its Python wrapper); tests/test_signing.py checks it against ``hmac``.
        self._pads = tuple(_keyed(k) for k in keys)

    @staticmethod
    def _mac(pads: tuple[Any, Any], message: bytes) -> bytes:
        inner, outer = pads[0].copy(), pads[1].copy()
        inner.update(message)
        outer.update(inner.digest())
        mac: bytes = outer.hexdigest().encode()
        return mac

    def sign(self, message: bytes) -> bytes:
        return self._mac(self._pads[0], message)

    def verify(self, message: bytes, signature: bytes | None) -> str | None:
        """``None`` when a key made ``signature``; otherwise why the job must not run."""
        if not signature:
            return (
                "bad signature: the job is unsigned (no 'sig' field) and this worker's app "
                "has a signing_key, so it runs signed jobs only"
            )
        for pads in self._pads:
            if hmac.compare_digest(self._mac(pads, message), signature):
                return None
        return (
            "bad signature: the job's id, queue, task, arguments, retries or timeout were "
            "changed after it was signed, or it was signed with a key this worker lacks"
        )


def _keyed(key: bytes) -> tuple[Any, Any]:
    """The inner and outer SHA-256 states of HMAC-SHA256 with ``key``."""
    block = _DIGEST().block_size
    if len(key) > block:
        key = _DIGEST(key).digest()
    key = key.ljust(block, b"\0")
    inner = _DIGEST(bytes(b ^ 0x36 for b in key))
    outer = _DIGEST(bytes(b ^ 0x5C for b in key))
    return inner, outer


def sign_job(
    signer: Signer,
    app: str,
    queue: str,
    job_id: str,
    task: str,
    args: bytes,
    kwargs: bytes,
    retries: int,
    timeout: str,
    piped: bool = False,
) -> bytes:
    """The ``sig`` of a job about to be enqueued (the encode side, ``Call.prepare``)."""
    message = job_message(
        app, queue, job_id.encode(), task.encode(), args, kwargs, b"%d" % retries,
        timeout.encode(), piped,
    )  # fmt: skip
    return signer.sign(message)


def verify_row(signer: Signer, app: str, queue: str, row: list[object]) -> str | None:
    """Check a started-job row as the worker's scripts return it (``start.lua``: entry id,
    job id, attempt, task, args, kwargs, timeout, retries, priority, trace, input, sig), raw
    bytes as stored; ``None`` when it verifies, else why it must not run (the read side,
    ``Runner.start``). ``queue`` is the queue whose keys hold the record, not the record's
    own say."""
    job_id, task, args, kwargs, timeout, retries = (
        row[1], row[3], row[4], row[5], row[6], row[7],
    )  # fmt: skip
    piped = len(row) > 10 and row[10] is not None
    message = job_message(app, queue, job_id, task, args, kwargs, retries, timeout, piped)  # type: ignore[arg-type]
    return signer.verify(message, row[11] if len(row) > 11 else None)  # type: ignore[arg-type]
