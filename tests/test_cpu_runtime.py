"""The default embedder on the CPU: ONNX Runtime, exported from timm at run time and kept in
the model cache, with torch's vectors; torch when ONNX Runtime cannot run it, and the summary
says so."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXTURES, run_curate

pytestmark = pytest.mark.slow   # a real model, exported

DEMO = FIXTURES / "dedup_demo.json"
ROOT_IMAGES = FIXTURES / "images"


def load(monkeypatch=None, runtime=None):
    from curate.registry import get_registry
    if runtime:
        monkeypatch.setenv("CURATE_CPU_RUNTIME", runtime)
    return get_registry().get("embedder", "timm-pool").load(None, None, "cpu")


def test_onnx_runtime_gives_torchs_vectors_under_the_same_cache_key(monkeypatch):
    onnx_model = load()
    torch_model = load(monkeypatch, "torch")
    assert (onnx_model.runtime, torch_model.runtime) == ("onnxruntime", "torch")
    assert onnx_model.weights_digest == torch_model.weights_digest and onnx_model.dim == torch_model.dim
    batch = np.random.default_rng(1).integers(0, 256, (5, 3, onnx_model.size, onnx_model.size), dtype=np.uint8)
    cosines = (onnx_model.embed(batch) * torch_model.embed(batch)).sum(axis=1)
    assert cosines.min() >= 0.999


def test_a_cached_export_loads_without_importing_torch_or_timm():
    load()                                                   # exported (or found) in the test cache
    # --device auto finds no CUDA without torch where there is no NVIDIA driver
    device = "cpu" if os.path.exists("/dev/nvidiactl") else "auto"
    code = ("import sys; from curate.registry import get_registry; "
            f"m = get_registry().get('embedder', 'timm-pool').load(None, None, {device!r}); "
            "print(m.runtime, 'torch' in sys.modules, 'timm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ))
    assert out.stdout.split() == ["onnxruntime", "False", "False"]


def test_a_damaged_cache_entry_is_exported_again(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_MODEL_CACHE", str(tmp_path))
    load()
    exported = next(tmp_path.glob("*.onnx"))
    exported.write_bytes(b"not a model")
    assert load().runtime == "onnxruntime"
    assert exported.stat().st_size > 1000


@pytest.mark.parametrize("missing", ["onnxruntime", "onnx"])
def test_without_onnx_runtime_torch_runs_and_the_summary_says_so(tmp_path, monkeypatch, missing):
    from curate.plugins import timm_onnx
    monkeypatch.setenv("CURATE_MODEL_CACHE", str(tmp_path / "models"))
    if missing == "onnxruntime":
        monkeypatch.setattr(timm_onnx, "onnxruntime_module", lambda: None)
    else:
        monkeypatch.setitem(sys.modules, "onnx", None)         # import onnx raises ImportError
    out = tmp_path / "out.json"
    result = run_curate("dedup", DEMO, "-o", out, "--image-root", ROOT_IMAGES, "--embedder", "timm-pool",
                        "--no-cache", check=0)
    assert "runs in torch, not ONNX Runtime" in result.stderr and f"{missing} " in result.stderr
    report = json.loads((Path(str(out) + ".report") / "report.json").read_text())
    assert report["embedding"]["runtime"] == "torch"
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").glob("*.onnx"))


@pytest.mark.parametrize("given, kept", [(None, "4"), ("12", "12")])
def test_the_command_line_lets_blas_threads_sleep_before_numpy_loads(given, kept):
    """OpenBLAS reads OPENBLAS_THREAD_TIMEOUT when numpy loads it: the command sets it first
    (its threads' spinning cost a photo run 5% of its CPU), and a user's own value stays."""
    code = ("import os, sys, types; "
            "sys.modules['curate.cli'] = types.SimpleNamespace(main=lambda: print("
            "os.environ.get('OPENBLAS_THREAD_TIMEOUT'), 'numpy' in sys.modules)); "
            "from curate.entry import main; main()")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if given:
        env["OPENBLAS_THREAD_TIMEOUT"] = given
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == [kept, "False"]
