import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from types import SimpleNamespace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
SHARED = Path(os.environ.get("CURATE_SHARED", ROOT.parent / "shared"))
# Tests never download: model weights come from files they make (Hugging Face's own switch)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Models exported for ONNX Runtime go to a cache of the test session's own (exported once)
os.environ["CURATE_MODEL_CACHE"] = tempfile.mkdtemp(prefix="curate-test-models-")
atexit.register(shutil.rmtree, os.environ["CURATE_MODEL_CACHE"], True)
REAL = SHARED / "data" / "real"
IMAGES = SHARED / "data" / "images"
CURATE = [sys.executable, "-m", "curate"]

needs_shared = pytest.mark.skipif(not REAL.is_dir(), reason=f"shared data not found at {SHARED}")


def pip_installed(package: Path, target: Path) -> Path:
    """``package`` (a folder with a pyproject.toml), pip-installed for real into ``target``, a
    folder to put on PYTHONPATH: a plugin as a user installs it."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(package)], check=True, capture_output=True)
    return target


def with_path(*folders) -> dict:
    """An environment whose PYTHONPATH holds ``folders``."""
    return {"PYTHONPATH": os.pathsep.join(str(f) for f in folders)}


def run_curate(*args, env=None, check=None, subprocess_=False, **kwargs):
    """Run the CLI as a user would; returns an object with returncode, stdout and stderr.

    In-process through click's CliRunner (fast: torch and the plugins load once per session),
    or in a real subprocess when the test needs one: other installed plugins (PYTHONPATH),
    signals, or ``subprocess_=True``."""
    if subprocess_ or kwargs or (env and "PYTHONPATH" in env):
        full_env = dict(os.environ, COLUMNS="200", **(env or {}))
        result = subprocess.run([*CURATE, *map(str, args)], capture_output=True, text=True, env=full_env,
                                **kwargs)
    else:
        result = invoke(*args, env=env)
    if check is not None:
        assert result.returncode == check, f"exit {result.returncode}\nstdout:{result.stdout}\nstderr:{result.stderr}"
    return result


def invoke(*args, env=None):
    """The CLI in this process, with the current registry (see the ``registry_with`` fixture)."""
    from click.testing import CliRunner
    from curate import cli
    from curate.registry import get_registry
    runner = CliRunner()
    result = runner.invoke(cli.prepare(get_registry()), [str(a) for a in args], prog_name="curate",
                           env={"COLUMNS": "200", **(env or {})}, catch_exceptions=False)
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr)


@pytest.fixture
def registry_with():
    """Load the registry with extra plugins registered in code: ``registry_with(module, ...)``."""
    from curate import registry

    def load(*plugins):
        registry._REGISTRY = registry.load_registry(extra_plugins=plugins)
        return registry._REGISTRY

    yield load
    registry.reset_registry()


def assert_one_line_error(result, *fragments):
    """Exit 1, no traceback, one line on stderr that holds every fragment."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("warning:")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def load_json(path):
    path = Path(path)
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture
def llava_records():
    return load_json(FIXTURES / "llava_small.json")


def summary_numbers(stderr: str) -> dict[str, int]:
    """The rows of a run's summary table (input records, written, removed, rejected) as numbers."""
    numbers = {}
    for line in stderr.splitlines():
        cells = [c.strip() for c in line.strip().strip("│|").split("│")]
        if len(cells) == 2 and cells[0] in ("input records", "written", "removed", "rejected"):
            numbers[cells[0]] = int(cells[1].replace(",", ""))
    return numbers
