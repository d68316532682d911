"""The supervisor of ``aioq worker --processes N``: N worker processes, kept running.

Each child is a plain ``aioq worker`` command (``python -m aioq worker ...``, built by
``aioq/cli/worker.py``), started with ``subprocess`` rather than forked or spawned through
``multiprocessing``: a child is exactly the process a user runs by hand (same imports, same
signal handling, same exit codes), nothing is pickled, and a child that cannot import the app
is just a process that exits 2. Children run in their own process groups, so a Ctrl-C in the
terminal reaches the supervisor alone and each child sees exactly the signals it forwards.

Policy:

* A child that dies (a signal such as SIGKILL or the OOM killer's, a crash, any exit code
  other than ``RECYCLE``) is started again after a backoff of ``BACKOFF_FIRST`` seconds,
  doubling with every further death in a row up to ``BACKOFF_MAX``; a child that ran
  ``STABLE_AFTER`` seconds starts the count afresh. A child failing at import therefore
  costs a process start every 30 s at most, not a busy loop.
* ``RECYCLE`` (a child that reached ``--max-jobs-per-process`` or
  ``--max-memory-per-process`` and stopped gracefully) is replaced at once.
* With ``burst`` a child that exits 0 has drained its queues and is not replaced; the
  supervisor returns 0 once every child has.
* SIGTERM/SIGINT: forwarded to every child (which stops gracefully: a grace period, then the
  jobs still running are handed back); pending restarts are dropped; the supervisor returns 0
  once every child has exited (1 if one of them exited with an error). A second signal is
  forwarded too (the children skip the grace period).
* The supervisor killed outright (SIGKILL cannot be caught): each child asked Linux for
  SIGTERM when its parent dies (``PR_SET_PDEATHSIG``, ``stop_with_supervisor``), so it stops
  gracefully on its own.

This module imports nothing of aioq: the CLI imports it, as does ``worker/heartbeat.py`` for
the ``process_identity`` each child reports.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType

log = logging.getLogger("aioq.supervisor")

ENV = "AIOQ_SUPERVISOR"  # "<supervisor pid>:<process number>" in each child's environment
RECYCLE = 75  # a child's exit code: "replace me" (EX_TEMPFAIL: try again)
BACKOFF_FIRST = 0.5  # seconds before restarting a child that died
BACKOFF_MAX = 30.0
STABLE_AFTER = 10.0  # a child that ran this long resets its backoff

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def backoff(deaths: int) -> float:
    """Seconds to wait before restarting a child after ``deaths`` deaths in a row (>= 1)."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** (deaths - 1))


# -- the child's side -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Supervised:
    """What a child knows of its supervisor: its pid, and the child's number (1..N)."""

    supervisor: int
    process: int


def supervised() -> Supervised | None:
    """This process's supervisor, when it is a child of one (from ``ENV``)."""
    raw = os.environ.get(ENV, "")
    pid, _, number = raw.partition(":")
    if not (pid.isdigit() and number.isdigit()):
        return None
    return Supervised(int(pid), int(number))


def process_identity() -> dict[str, int]:
    """The fields a child adds to its heartbeat (``aioq info`` groups the processes of one
    supervisor by them); empty for a worker without a supervisor."""
    s = supervised()
    return {} if s is None else {"supervisor": s.supervisor, "process": s.process}


def stop_with_supervisor(s: Supervised) -> None:
    """Have the kernel send this process SIGTERM when its supervisor dies, however it dies
    (Linux; elsewhere a no-op). The worker treats it as any SIGTERM: it stops gracefully and
    hands its jobs back. A supervisor already gone exits this process now."""
    if sys.platform.startswith("linux"):
        import ctypes  # here: every worker imports this module, few of them need ctypes

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    # the supervisor may have died before the prctl: then this process has a new parent
    if os.getppid() != s.supervisor:
        raise SystemExit(f"aioq: supervisor {s.supervisor} is gone; not starting")


# -- the supervisor -------------------------------------------------------------------------


@dataclass(slots=True)
class _Child:
    number: int  # 1..N
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0  # monotonic
    deaths: int = 0  # deaths in a row without a stable run
    restart_at: float | None = None  # monotonic; None: not waiting to restart
    finished: bool = False  # burst: drained its queues, not replaced


class Supervisor:
    """Runs ``command(number)`` for number 1..``processes`` as child processes, in ``env``
    (default: this process's) plus ``ENV``, until SIGTERM/SIGINT (or, ``burst``, until every
    child exited 0); ``run()`` returns the exit code."""

    def __init__(
        self,
        command: Callable[[int], list[str]],
        processes: int,
        *,
        burst: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes!r}")
        self.command = command
        self.burst = burst
        self.env = dict(os.environ if env is None else env)
        self.children = [_Child(i) for i in range(1, processes + 1)]
        self.stopping = 0  # stop signals received
        self.failed = False  # a child exited with an error after the stop
        self._signals: deque[int] = deque()

    def run(self) -> int:
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        old_fd = signal.set_wakeup_fd(w)  # a signal makes the select below return
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
        old = {s: signal.signal(s, self._on_signal) for s in handled}
        try:
            log.info(
                "supervisor %d: starting %d worker process(es)", os.getpid(), len(self.children)
            )
            for child in self.children:
                self._start(child)
            while self._active():
                select.select([r], [], [], self._timeout())
                with contextlib.suppress(BlockingIOError):
                    while os.read(r, 512):
                        pass
                while self._signals:
                    self._forward(self._signals.popleft())
                self._reap()
                self._restart_due()
        finally:
            for child in self.children:  # only when run() itself fails: do not orphan them
                if child.proc is not None and child.proc.poll() is None:
                    child.proc.send_signal(signal.SIGTERM)
            signal.set_wakeup_fd(old_fd)
            for s, h in old.items():
                signal.signal(s, h)
            os.close(r)
            os.close(w)
        if self.stopping:
            log.info("every worker process has stopped")
        else:
            log.info("every worker process has drained its queues")
        return 1 if self.failed else 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum != signal.SIGCHLD:  # SIGCHLD only wakes the loop up: it reaps anyway
            self._signals.append(signum)

    def _active(self) -> bool:
        return any(c.proc is not None or c.restart_at is not None for c in self.children)

    def _timeout(self) -> float | None:
        due = [c.restart_at for c in self.children if c.restart_at is not None]
        # no signal lost can hang us: reap at least every second in any case
        return 1.0 if not due else max(0.0, min(1.0, min(due) - time.monotonic()))

    def _start(self, child: _Child) -> None:
        env = {**self.env, ENV: f"{os.getpid()}:{child.number}"}
        child.restart_at = None
        try:
            child.proc = subprocess.Popen(
                self.command(child.number), env=env, stdin=subprocess.DEVNULL, process_group=0
            )
        except OSError as exc:  # e.g. out of processes: as if it died at once
            log.error("process %d could not be started: %s", child.number, exc)
            child.proc = None
            child.deaths += 1
            child.restart_at = time.monotonic() + backoff(child.deaths)
            return
        child.started = time.monotonic()
        log.info("process %d started (pid %d)", child.number, child.proc.pid)

    def _forward(self, signum: int) -> None:
        self.stopping += 1
        live = [c for c in self.children if c.proc is not None]
        name = signal.Signals(signum).name
        if self.stopping == 1:
            log.info(
                "%s: forwarding it to %d worker process(es), which finish their running jobs "
                "and stop; a second signal makes them hand running jobs back now",
                name, len(live),
            )  # fmt: skip
        else:
            log.info("second signal (%s): forwarding it; the workers hand their jobs back now",
                     name)  # fmt: skip
        for c in self.children:
            c.restart_at = None  # stopping: nothing is restarted
            if c.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    c.proc.send_signal(signum)

    def _reap(self) -> None:
        for child in self.children:
            proc = child.proc
            if proc is None or proc.poll() is None:
                continue
            child.proc = None
            self._died(child, proc.pid, proc.returncode, time.monotonic() - child.started)

    def _died(self, child: _Child, pid: int, code: int, ran: float) -> None:
        how = _how(code)
        what = f"process {child.number} (pid {pid}) {how} after {ran:.1f}s"
        if self.stopping:
            clean = code in (0, RECYCLE) or -code in (signal.SIGTERM, signal.SIGINT)
            if not clean:
                self.failed = True
            (log.info if clean else log.warning)("%s", what)
            return
        if code == RECYCLE:
            child.deaths = 0
            log.info("%s: recycled; starting its replacement now", what)
            self._start(child)
            return
        if code == 0 and self.burst:
            child.finished = True
            log.info("%s: its queues are drained", what)
            return
        child.deaths = 1 if ran >= STABLE_AFTER else child.deaths + 1
        delay = backoff(child.deaths)
        again = f" ({_ordinal(child.deaths)} time in a row)" if child.deaths > 1 else ""
        log.warning("%s%s; restarting it in %gs", what, again, delay)
        child.restart_at = time.monotonic() + delay

    def _restart_due(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None and child.restart_at <= now and not self.stopping:
                self._start(child)


def _how(code: int) -> str:
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
