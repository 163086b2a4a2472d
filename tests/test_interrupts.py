"""SIGKILL while writing: the destination is absent or the complete old file, never partial."""

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import CURATE, FIXTURES, run_curate

pytestmark = pytest.mark.slow   # a model, Ray or killed processes

RECORD = {"id": "x", "image": "coco/train2017/000000000001.jpg", "conversations": [
    {"from": "human", "value": "<image>\nWhat is in the picture? " + "word " * 60},
    {"from": "gpt", "value": "An astronaut. " + "detail " * 200}]}


@pytest.fixture(scope="module")
def big_input(tmp_path_factory):
    """About 100 MB of records that share a few fixture images (so dedup's embedding is quick)."""
    path = tmp_path_factory.mktemp("big") / "big.json"
    images = [f"coco/train2017/00000000000{i}.jpg" for i in range(1, 6)]
    with open(path, "w") as f:
        f.write("[")
        for i in range(60000):
            f.write(("," if i else "") + json.dumps(dict(RECORD, id=f"r{i}", image=images[i % 5])))
        f.write("]")
    return path


def kill_while_writing(command, output):
    """Start the command, SIGKILL it once its temporary output exists, return what it left."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    killed = False
    while time.monotonic() < deadline and process.poll() is None:
        temporary = list(output.parent.glob(f".{output.name}.*.tmp"))
        if temporary and temporary[0].stat().st_size > 0:
            os.kill(process.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.005)
    process.wait()
    assert killed, "the command finished before it could be killed"


@pytest.mark.parametrize("old", [None, "the complete old file"])
def test_killed_convert_leaves_no_partial_output(tmp_path, big_input, old):
    out = tmp_path / "out.json"
    if old:
        out.write_text(old)
    kill_while_writing([*CURATE, "convert", "llava", "llava", str(big_input), "-o", str(out), "--overwrite", "-q"],
                       out)
    if old:
        assert out.read_text() == old
    else:
        assert not out.exists()


def test_killed_dedup_leaves_no_partial_output(tmp_path, big_input):
    out = tmp_path / "out.json"
    out.write_text("old")
    kill_while_writing([*CURATE, "dedup", str(big_input), "-o", str(out), "--overwrite", "--image-root",
                        str(FIXTURES / "images"), "--embedder", "timm-pool", "--no-cache", "-q"], out)
    assert out.read_text() == "old"
    assert not (tmp_path / "out.json.report" / "report.json").exists()


# A signal caught (by the C level) as the command ends, its Python handler still pending: the
# command's last act sends it with libc's kill from inside a defaultdict lookup, C code that
# runs no handler, so the handler first runs once the ending below is under way.
LATE_SIGNAL = """
import ctypes, os, signal, sys, types
from collections import defaultdict
from functools import partial
from curate.interrupts import Terminated

kill = ctypes.CDLL(None).kill
kill.restype = None
late = defaultdict(partial(kill, os.getpid(), signal.{late}))

def command():
    raise {ending} from late["signal"]

sys.modules["curate.cli"] = types.SimpleNamespace(main=command)    # what entry.main runs
from curate.entry import main
main()
"""


@pytest.mark.parametrize("ending, late, code, stderr", [
    ("SystemExit(0)", "SIGTERM", 0, ""),
    ("SystemExit(3)", "SIGHUP", 3, ""),
    ("Terminated(signal.SIGTERM)", "SIGINT", 143, "error: interrupted; no output was written\n"),
])
def test_a_signal_once_the_exit_code_is_decided_changes_nothing(ending, late, code, stderr):
    """Its handler used to run inside ``ignore_signals()`` and raise there: a traceback and
    exit 1 instead of the command's exit code (or the first signal's)."""
    script = LATE_SIGNAL.format(ending=ending, late=late)
    result = subprocess.run([os.sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (code, stderr)


def test_a_signal_that_python_wraps_during_an_import_is_still_a_clean_interruption(monkeypatch, tmp_path):
    """Python 3.11 turns an exception raised while a class is created (a dataclass field's
    __set_name__, as rich's Column on import) into a RuntimeError caused by it: a Ctrl-C that
    lands there is still exit 130 with one line, not an internal error."""
    from curate import cli
    from curate.interrupts import interruption_of

    class Field:
        def __set_name__(self, owner, name):
            raise KeyboardInterrupt

    with pytest.raises(RuntimeError) as caught:
        class Column:             # noqa: F841
            cells = Field()
    assert isinstance(interruption_of(caught.value), KeyboardInterrupt)
    assert interruption_of(RuntimeError("no signal here")) is None

    def convert(*args, **kwargs):
        raise caught.value
    monkeypatch.setattr(cli.api, "convert", convert)
    from curate import atomic
    monkeypatch.setattr(atomic, "COMMITTED", [])        # what earlier tests in this process committed
    result = run_curate("convert", "llava", "llava", FIXTURES / "llava_small.json", "-o", tmp_path / "o.json")
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip() == "error: interrupted; no output was written"


FINALISER_SCRIPT = """
import os, signal, time
from curate.interrupts import install_signal_handlers
install_signal_handlers()

class Finalised:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)       # the handler runs while the finaliser does
        total = 0
        for i in range(1000):
            total += i

try:
    Finalised()                                   # dropped at once: its __del__ runs here
    deadline = time.monotonic() + 20              # the signal comes back within moments, or never
    while time.monotonic() < deadline:
        pass
    print("lost")
except KeyboardInterrupt:
    print("raised after the finaliser")
"""


def test_a_signal_during_a_finaliser_is_raised_once_out_of_it():
    """Python prints and drops an exception raised in a finaliser or a weak-reference callback
    (importlib runs one on its module locks during every import): the handler sends the signal
    again instead, so that the interruption lands in the program's own frame."""
    import sys
    result = subprocess.run([sys.executable, "-c", FINALISER_SCRIPT], capture_output=True, text=True, timeout=60)
    assert result.stdout == "raised after the finaliser\n", (result.stdout, result.stderr)
    assert "Exception ignored" not in result.stderr


WHILE_PARSING = """
import sys
import click
from curate import entry
from curate.interrupts import Terminated

def interrupted(self, *args, **kwargs):      # the signal lands while click parses the arguments
    raise {raised}

click.Group.make_context = interrupted
sys.argv = ["curate", "formats"]
entry.main()
"""


@pytest.mark.parametrize("raised, code", [("KeyboardInterrupt()", 130), ("Terminated(15)", 143)])
def test_a_signal_while_click_parses_the_arguments_is_a_clean_interruption(raised, code):
    """Outside a command (parsing the arguments) click turned Ctrl-C into its own "Aborted!"
    and exit 1: it is curate's one line and 128 + the signal, as anywhere else."""
    result = subprocess.run([os.sys.executable, "-c", WHILE_PARSING.format(raised=raised)], capture_output=True,
                            text=True, timeout=120)
    assert (result.returncode, result.stderr.strip()) == (code, "error: interrupted; no output was written")
