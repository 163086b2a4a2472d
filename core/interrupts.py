"""Signals as exceptions, and steps that a signal must not cut in two.

curate turns SIGINT, SIGTERM and SIGHUP into exceptions raised where the program is, so a
run unwinds like Ctrl-C: temporary files removed, nothing half-written renamed into place.
A few steps must happen whole (creating a temporary file and recording it for removal;
renaming a run's outputs into place): inside :func:`signals_held` a signal waits until the
step is done. Blocking the signal in this thread is not enough on its own, because the
kernel may hand a process signal to any thread (a decode worker, rich's refresh thread) and
Python then runs the handler in the main thread at once; so the handler itself defers too.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_holding = 0
_pending: list[int] = []


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C; ``signal`` says which (for the exit code)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signal = signum


def _interruption(signum: int) -> KeyboardInterrupt:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def _on_signal(signum, frame):
    if _holding:
        _pending.append(signum)
        return
    raise _interruption(signum)


def install_signal_handlers() -> None:
    for signum in HANDLED:
        signal.signal(signum, _on_signal)


def ignore_signals() -> None:
    """The command is over and its exit code decided: a signal now must not turn it into a
    death by signal while Python shuts down."""
    for signum in HANDLED:
        signal.signal(signum, signal.SIG_IGN)


@contextmanager
def signals_held():
    """Run the block whole: a signal that arrives meanwhile is raised when it ends."""
    global _holding
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    _holding += 1
    try:
        yield
    finally:
        _holding -= 1
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)    # a blocked signal is delivered here
        if not _holding and _pending:
            signum = _pending[0]
            _pending.clear()
            raise _interruption(signum)


@contextmanager
def handlers_kept():
    """Put curate's handlers back after a library that installs its own (Ray's driver turns
    SIGTERM into ``sys.exit`` and its core worker into an abort with a stack dump)."""
    saved = {signum: signal.getsignal(signum) for signum in HANDLED}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            if handler is not None:
                signal.signal(signum, handler)
