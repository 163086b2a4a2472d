"""The ``curate`` console script. Signal handlers go in before the heavy imports (numpy, rich,
the plugins), so that Ctrl-C or SIGTERM during start-up is a clean exit, not a traceback."""

from __future__ import annotations

import signal

from .interrupts import HANDLED, exit_interrupted, ignore_signals, install_signal_handlers, interruption_of


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
