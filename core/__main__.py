# ``python -m curate``: hold Ctrl-C, SIGTERM and SIGHUP until curate's handlers are in (entry.main
# releases them), so that a signal during the first imports is a clean exit, never a traceback.
# ``_signal`` is built into the interpreter: importing it loads no file, so the window before
# the mask is as short as Python allows (``signal`` is a module on disk, read and unmarshalled).
import _signal

_signal.pthread_sigmask(_signal.SIG_BLOCK, {_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP})

from .entry import main  # noqa: E402

main()
