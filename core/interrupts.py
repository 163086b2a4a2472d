"""Signals as exceptions, and steps that a signal must not cut in two.

curate turns SIGINT, SIGTERM and SIGHUP into exceptions raised where the program is, so a
run unwinds like Ctrl-C: temporary files removed, nothing half-written renamed into place.
A few steps must happen whole (creating a temporary file and recording it for removal;
renaming a run's outputs into place): inside :func:`signals_held` a signal waits until the
step is done. Blocking the signal in this thread is not enough on its own, because the
kernel may hand a process signal to any thread (a decode worker, rich's refresh thread) and
Python then runs the handler in the main thread at once; so the handler itself defers too.

Once the exit code is decided (a ``SystemExit`` on its way out, or the exit after a signal),
no signal changes it: the handlers become ``SIG_IGN``, and a signal that the C level caught
just before, whose Python handler CPython still runs at its next check (``signal.signal``
itself runs pending handlers first), finds the exit under way and does nothing.
"""

from __future__ import annotations

import _thread
import os
import signal
import sys
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


def _exiting() -> bool:
    """A SystemExit or an interruption is being handled: the exit code is decided."""
    return isinstance(sys.exc_info()[1], (SystemExit, KeyboardInterrupt))


def _on_signal(signum, frame):
    if _exiting():          # no window: true from the first instruction of the ``except`` on
        return
    if _holding:
        _pending.append(signum)
        return
    if _swallowed_in(frame):
        # raised here, the interruption would be printed as "Exception ignored" and lost: send
        # the signal again from another thread (from this one, Python would run this handler
        # again at once), so that it comes back at a later check, once out of there
        _thread.start_new_thread(os.kill, (os.getpid(), signum))
        return
    raise _interruption(signum)


def _swallowed_in(frame) -> bool:
    """Whether an exception raised in ``frame`` would be dropped by Python instead of unwinding
    the program: it runs inside a finaliser (``__del__``) or a weak-reference callback, such as
    the one importlib runs on its module locks while curate imports its modules."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__" or (code.co_name == "cb" and "importlib" in code.co_filename):
            return True
        frame = frame.f_back
    return False


def interruption_of(error: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM behind ``error``, if one is: Python wraps an exception raised
    while a class is created (``__set_name__``, as dataclasses do on import) in a RuntimeError,
    and libraries re-raise their own errors from one, so a signal handled during an import can
    arrive as another exception caused by it."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def install_signal_handlers() -> None:
    for signum in HANDLED:
        signal.signal(signum, _on_signal)


def ignore_signals() -> None:
    """The command is over and its exit code decided: from here no signal runs a handler (nor
    turns the exit into a death by signal while Python shuts down). One caught just before,
    whose handler runs as this is called, is dropped by the handler (see :func:`_exiting`)."""
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
    """Run a library's start-up with curate's handlers in force throughout: its
    ``signal.signal`` calls for these signals are refused while the block runs (Ray's driver
    would turn SIGTERM into ``sys.exit``), and the handlers are put back at the end in case
    it installed any by other means.

    Putting them back only at the end left the start-up to the library's handlers; blocking
    the signals in this thread meanwhile does not close that window, because the kernel then
    hands a process signal to another thread (torch's, OpenMP's, started earlier and not
    blocking it), which runs whatever handler is installed."""
    saved = {signum: signal.getsignal(signum) for signum in HANDLED}
    install = signal.signal

    def refuse(signum, handler):
        if signum in HANDLED:
            return signal.getsignal(signum)
        return install(signum, handler)

    signal.signal = refuse
    try:
        yield
    finally:
        signal.signal = install
        for signum, handler in saved.items():
            if handler is not None:
                signal.signal(signum, handler)


def exit_interrupted(error: KeyboardInterrupt) -> None:
    """One line saying what was committed before the signal, and exit 128 + its number."""
    ignore_signals()
    atomic = sys.modules.get("curate.atomic")
    if atomic:
        atomic.remove_temporaries()
    committed = len(atomic.COMMITTED) if atomic else 0
    done = f"{committed} output(s) were written before it" if committed else "no output was written"
    sys.stderr.write(f"error: interrupted; {done}\n")
    sys.exit(128 + getattr(error, "signal", signal.SIGINT))
