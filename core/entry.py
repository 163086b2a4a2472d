"""The ``curate`` console script. Signal handlers go in before the heavy imports (numpy, rich,
the plugins), so that Ctrl-C or SIGTERM during start-up is a clean exit, not a traceback."""

from __future__ import annotations

import signal
import sys

from .interrupts import HANDLED, ignore_signals, install_signal_handlers, interruption_of


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


def main() -> None:
    install_signal_handlers()
    try:
        # a signal held since start-up (``python -m curate`` holds them) arrives here, to curate's handler
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
        from .cli import main as run
        run()
    except KeyboardInterrupt as e:      # during start-up or teardown; the commands catch their own
        exit_interrupted(e)
    except Exception as e:              # a signal during an import can arrive wrapped (interruption_of)
        interrupted = interruption_of(e)
        if interrupted is None:
            raise
        exit_interrupted(interrupted)
    except SystemExit:
        ignore_signals()
        raise


if __name__ == "__main__":
    main()
