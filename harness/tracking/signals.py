"""Stopping signals (Ctrl-C, SIGTERM, SIGHUP) as one exception, deferred while a record is written.

``install()`` makes SIGINT, SIGTERM and SIGHUP raise :class:`Stopped` (a ``KeyboardInterrupt``) in
the main thread, so that every stop unwinds through the same ``except`` blocks that close the
MLflow runs. Inside ``deferred()`` (creating a run, writing its first records, closing it) a signal
is only noted, and raised when the block ends: a run is never left half-created or half-closed,
whenever the signal lands.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s is not None)

_depth = 0  # nesting of deferred() blocks
_pending: int | None = None  # a signal that arrived inside one


class Stopped(KeyboardInterrupt):
    """The process was asked to stop (Ctrl-C, SIGTERM from a scheduler or kill, SIGHUP)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM


def _handler(signum, frame):
    global _pending
    if _depth:
        _pending = signum
        return
    raise Stopped(signum)


def _handler_once(signum, frame):
    for s in SIGNALS:  # a Python no-op, not SIG_IGN: a signal already pending would print a race warning
        signal.signal(s, lambda *_: None)
    _handler(signum, frame)


def install(once: bool = False) -> None:
    """Route the stopping signals to :class:`Stopped` (main thread only: Python allows no other).
    once: only the first stop raises; later ones are swallowed (a worker that its launcher and its
    terminal both stop closes its runs once)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for s in SIGNALS:
        if s == signal.SIGINT and signal.getsignal(s) is signal.SIG_IGN:
            continue  # a process started to ignore Ctrl-C (nohup, a pool worker) keeps ignoring it
        signal.signal(s, _handler_once if once else _handler)


@contextlib.contextmanager
def deferred():
    """A block that a stopping signal does not interrupt; the signal is raised when it ends."""
    global _depth, _pending
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending is not None:
            signum, _pending = _pending, None
            raise Stopped(signum)


_watched: int | None = None
_orphaned = threading.Event()
ORPHAN_GRACE = 60.0  # seconds an orphaned worker has to close its runs after its SIGTERM before it exits anyway


def watch_parent(interval: float = 1.0) -> None:
    """In a launcher's worker process (joblib, the stacked launcher's): once the process that started
    it is gone (kill -9 of the sweep), stop as if sent SIGTERM, so that its run is closed as KILLED,
    then leave (``exit_if_orphaned``) instead of taking the next queued job. Started once per process;
    a single run from a shell is never watched (nohup may outlive its shell)."""
    global _watched
    if _watched is not None:
        return
    _watched = parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        _orphaned.set()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(ORPHAN_GRACE)
        os._exit(128 + signal.SIGTERM)  # a run still open is closed as FAILED by the next sweep on its config

    threading.Thread(target=watch, name="harness-watch-parent", daemon=True).start()


def exit_if_orphaned() -> None:
    """Leave now if this worker's sweep process is gone (its runs are closed by then)."""
    if _orphaned.is_set():
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + signal.SIGTERM)
