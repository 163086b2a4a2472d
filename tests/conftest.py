import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
SHARED = Path(os.environ.get("CURATE_SHARED", ROOT.parent / "shared"))
REAL = SHARED / "data" / "real"
IMAGES = SHARED / "data" / "images"
CURATE = [sys.executable, "-m", "curate.cli"]

needs_shared = pytest.mark.skipif(not REAL.is_dir(), reason=f"shared data not found at {SHARED}")


def run_curate(*args, env=None, check=None, **kwargs):
    """Run the real CLI in a subprocess; returns the CompletedProcess."""
    full_env = dict(os.environ, COLUMNS="200", **(env or {}))
    result = subprocess.run([*CURATE, *map(str, args)], capture_output=True, text=True, env=full_env,
                            **kwargs)
    if check is not None:
        assert result.returncode == check, f"exit {result.returncode}\nstdout:{result.stdout}\nstderr:{result.stderr}"
    return result


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
