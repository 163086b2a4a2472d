"""The ``curate`` console script. Signal handlers go in before the heavy imports (numpy, rich,
the plugins), so that Ctrl-C or SIGTERM during start-up is a clean exit, not a traceback."""

from __future__ import annotations

import signal
import sys


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, so that it unwinds like Ctrl-C:
    temporary files removed, nothing half-written renamed into place."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signal = signum


def _terminate(signum, frame):
    raise Terminated(signum)


def install_signal_handlers() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)


def exit_interrupted(error: KeyboardInterrupt) -> None:
    """One line saying what was committed before the signal, and exit 128 + its number."""
    ignore_signals()
    atomic = sys.modules.get("curate.atomic")
    committed = len(atomic.COMMITTED) if atomic else 0
    done = f"{committed} output(s) were written before it" if committed else "no output was written"
    sys.stderr.write(f"error: interrupted; {done}\n")
    sys.exit(128 + getattr(error, "signal", signal.SIGINT))


def main() -> None:
    install_signal_handlers()
    try:
        from .cli import main as run
        run()
    except KeyboardInterrupt as e:      # during start-up or teardown; the commands catch their own
        exit_interrupted(e)
    except SystemExit:
        ignore_signals()
        raise


def ignore_signals() -> None:
    """The command is over and its exit code decided: a signal now must not turn it into a
    death by signal while Python shuts down."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)


if __name__ == "__main__":
    main()
