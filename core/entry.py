"""The ``curate`` console script. Signal handlers go in before the heavy imports (numpy, rich,
the plugins), so that Ctrl-C or SIGTERM during start-up is a clean exit, not a traceback."""

from __future__ import annotations

import os
import signal

from .interrupts import HANDLED, exit_interrupted, ignore_signals, install_signal_handlers, interruption_of

# After each product numpy's OpenBLAS threads spin for about 2^28 cycles before they sleep: in a
# photo dedup run they burnt 0.3-0.45 s of CPU (5% of the run) waiting for work that came seconds
# later, and small products ran slower beside them. 2^4 cycles lets them sleep at once; waking
# them costs microseconds (large products take the same time: bench/README.md). Read by OpenBLAS
# when numpy loads it, so it is set before the first import of numpy; the user's value is kept.
BLAS_THREAD_TIMEOUT = ("OPENBLAS_THREAD_TIMEOUT", "4")


def main() -> None:
    install_signal_handlers()
    try:
        # a signal held since start-up (``python -m curate`` holds them) arrives here, to curate's handler
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
        os.environ.setdefault(*BLAS_THREAD_TIMEOUT)
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
