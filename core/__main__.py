# ``python -m curate``: hold Ctrl-C, SIGTERM and SIGHUP until curate's handlers are in (entry.main
# releases them), so that a signal during the first imports is a clean exit, never a traceback.
import signal

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})

from .entry import main  # noqa: E402

main()
