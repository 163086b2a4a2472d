"""The Ray engine (a local Ray instance, 2 CPUs, loopback only) against the local engine."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import CURATE, FIXTURES, load_json, run_curate

pytestmark = pytest.mark.slow   # a model, Ray or killed processes

pytest.importorskip("ray", reason="Ray is not installed (pip install 'curate[ray]'); .ci/run installs it")

DEMO = FIXTURES / "dedup_demo.json"
IMAGES = FIXTURES / "images"


def test_ray_embeddings_equal_local_ones_and_share_the_cache(tmp_path):
    common = ["--image-root", IMAGES, "--embedder", "timm-pool", "-q"]
    run_curate("embed", DEMO, *common, "--no-cache", "-o", tmp_path / "local.npy", check=0)
    run_curate("embed", DEMO, *common, "--engine", "ray", "--cache", tmp_path / "cache", "-o", tmp_path / "ray.npy",
               check=0)
    local, ray = np.load(tmp_path / "local.npy"), np.load(tmp_path / "ray.npy")
    assert np.allclose(local, ray, atol=1e-5)
    listing = json.loads((tmp_path / "ray.npy.json").read_text())
    assert [x["reason"] for x in listing if not x["ok"]] == ["missing file"]
    # the local engine resumes from what the Ray engine cached
    out = tmp_path / "o.json"
    run_curate("dedup", DEMO, "-o", out, *common, "--cache", tmp_path / "cache", "-t", "0.85", check=0)
    report = json.loads((Path(str(out) + ".report") / "report.json").read_text())
    assert report["embedding"]["embedded"] == 0 and report["embedding"]["cached"] == 13


def test_ray_dedup_makes_the_same_decisions(tmp_path):
    """Embedding and search on Ray in one run: the search tasks read the embedding's vectors
    from the cache and the signals' fingerprints from work files beside it (removed after)."""
    common = ["--image-root", IMAGES, "--embedder", "timm-pool", "-t", "0.85", "-t", "0.7", "-q"]
    run_curate("dedup", DEMO, "-o", tmp_path / "local.json", *common, "--no-cache", check=0)
    run_curate("dedup", DEMO, "-o", tmp_path / "ray.json", *common, "--engine", "ray", "--cache", tmp_path / "cache",
               check=0)
    assert not list((tmp_path / "cache").glob(".curate-search-*"))
    assert load_json(tmp_path / "local.json") == load_json(tmp_path / "ray.json")
    removed = [(Path(str(tmp_path / f"{e}.json") + ".report") / "removed.jsonl").read_text() for e in ("local", "ray")]
    strip = [[{k: v for k, v in json.loads(line).items() if k != "score"} for line in r.splitlines()] for r in removed]
    assert strip[0] == strip[1] and len(strip[0]) == 3


def test_ray_report_neighbours_come_from_the_search_tasks_and_equal_local_ones(tmp_path, monkeypatch):
    """`curate dedup --engine ray` with a partitioned search (its training size lowered on the
    driver, which plans the tasks, so the demo's 15 images are past it): the report's
    neighbours are chosen by tasks from the search's candidates, a part at a time, and the
    report equals the local run's but for paths, times and the cache."""
    from curate.plugins.indexes import PartitionedIndex
    import curate.ray_engine as ray_engine
    partitions, probe, spill, _, products = PartitionedIndex.__init__.__defaults__
    monkeypatch.setattr(PartitionedIndex.__init__, "__defaults__", (partitions, probe, spill, 6, products))
    monkeypatch.setattr(ray_engine, "NEAREST_ROWS", 4)          # four parts (the driver tells the tasks)
    common = ["--image-root", IMAGES, "--embedder", "timm-pool", "-t", "0.85", "-q", "--index", "partitioned",
              "--partitions", "3", "--partition-probe", "2", "--scope", "global"]
    run_curate("dedup", DEMO, "-o", tmp_path / "local.json", *common, "--no-cache", check=0)
    run_curate("dedup", DEMO, "-o", tmp_path / "ray.json", *common, "--engine", "ray", "--cache", tmp_path / "cache",
               check=0)
    assert not list((tmp_path / "cache").glob(".curate-search-*"))
    reports = [load_json(Path(str(tmp_path / f"{e}.json") + ".report") / "report.json") for e in ("local", "ray")]
    for key in ("nearest_neighbour_histogram", "kept_curve", "closest_kept_pairs", "thresholds"):
        if key in reports[0]:
            assert reports[0][key] == reports[1][key], key
    assert reports[0]["kept_curve"] and load_json(tmp_path / "local.json") == load_json(tmp_path / "ray.json")


def _driver_log(pid: int) -> list[Path]:
    """Ray's log of this driver, created as ``ray.init`` starts its core worker."""
    try:
        from ray._common.utils import get_default_ray_temp_dir     # RAY_TMPDIR, TMPDIR or /tmp
        root = Path(get_default_ray_temp_dir())
    except ImportError:
        root = Path("/tmp/ray")
    return list(root.glob(f"session_*/logs/python-core-driver-*_{pid}.log"))


def test_sigterm_with_ray_is_a_clean_exit(tmp_path):
    """SIGTERM as Ray's core worker starts (its driver log has just appeared), the moment Ray
    used to have its own handlers installed (a sys.exit; an abort with a stack dump, exit
    134): the usual clean line, exit 143, and nothing written."""
    from PIL import Image
    rng = np.random.default_rng(0)
    records = []
    for i in range(300):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / f"{i}.jpg")
        records.append({"id": str(i), "image": f"{i}.jpg",
                        "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A."}]})
    source = tmp_path / "in.json"
    source.write_text(json.dumps(records))
    out = tmp_path / "out.json"
    process = subprocess.Popen([*CURATE, "dedup", str(source), "-o", str(out), "--image-root", str(tmp_path),
                                "--embedder", "timm-pool", "--no-cache", "-q", "--engine", "ray", "--batch-size", "4"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not _driver_log(process.pid) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)                            # polling for the log, not waiting for a moment
    if not _driver_log(process.pid):
        process.kill()
        raise AssertionError(f"Ray's driver log never appeared (exit {process.wait()}): {process.stderr.read()[-2000:]}")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    # Ray's own log lines (core_worker.cc on every run, ray-project/ray#57733) may sit around it
    assert "error: interrupted; no output was written" in stderr.splitlines(), stderr[-2000:]
    assert "Traceback" not in stderr and "SIGTERM received" not in stderr, stderr[-2000:]
    assert not out.exists() and not list(tmp_path.glob(".out.json*"))


# SIGTERM from inside ray.init, once Ray's core worker is connected, in a process where torch's
# threads (started before Ray, not blocking the signal) can take it: every moment of Ray's
# start-up, no window left to chance.
INSIDE_RAY_INIT = """
import os, signal, sys, types
import torch
torch.ones(256, 256) @ torch.ones(256, 256)         # torch's worker threads, started before Ray
import ray._private.worker as worker
connect = worker.connect

def connect_then_sigterm(*args, **kwargs):
    connected = connect(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)
    return connected

worker.connect = connect_then_sigterm

def command():
    from curate.ray_engine import start_ray
    start_ray(None, num_cpus=2)
    print("Ray started and no signal was raised")

sys.modules["curate.cli"] = types.SimpleNamespace(main=command)    # what entry.main runs
from curate.entry import main
main()
"""


def test_sigterm_inside_ray_init_is_a_clean_exit():
    if not hasattr(pytest.importorskip("ray._private.worker"), "connect"):
        pytest.skip("this Ray has no ray._private.worker.connect to send the signal from")
    result = subprocess.run([sys.executable, "-c", INSIDE_RAY_INIT], capture_output=True, text=True, timeout=180)
    assert result.returncode == 143, result.stderr[-2000:]
    assert "error: interrupted; no output was written" in result.stderr.splitlines(), result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "SIGTERM received" not in result.stderr, result.stderr[-2000:]
    assert result.stdout == ""


def test_ray_tasks_find_the_pairs_the_local_search_finds(tmp_path):
    """The walk with its pairs searched by Ray tasks that read the vectors from a file (a work
    file the driver writes in the cache folder, removed after), against the local search:
    exact, and partitioned past its training size (k-means on the driver, partitions found and
    searched by tasks, the report's neighbours chosen by tasks from the search's products)."""
    import functools
    from curate.ray_engine import ray_pairs, RayPairs
    from curate.registry import get_registry
    from curate.similarity import Channel, walk
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2600, 32))
    vectors = np.concatenate([centres.repeat(8, 0) + 0.15 * rng.normal(size=(20800, 32)), rng.normal(size=(500, 32))])
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)[rng.permutation(21300)]
    made = []

    def pairs(channel, block):
        made.append(ray_pairs(channel, block, work_root=tmp_path))
        return made[-1]

    for name, options in (("exact", {}), ("partitioned", {"partitions": 40, "partition_probe": 4})):
        channel = [Channel("embedding", vectors, 0.9, get_registry().get("index", name), options, neighbours=16)]
        local = walk(channel, block=4096)
        on_ray = walk(channel, block=4096, pairs=pairs)
        assert on_ray.duplicate_of.tolist() == local.duplicate_of.tolist(), name
        assert on_ray.score.tolist() == local.score.tolist(), name
        assert (local.duplicate_of >= 0).sum() > 10000
        assert isinstance(made[-1], RayPairs) and made[-1].plan.partitions == options.get("partitions", 0)
        assert made[-1].costs and all(cost.rss_peak >= cost.rss_start > 0 for cost in made[-1].costs)
        if name == "partitioned":     # the report's neighbours, from the search tasks' own products
            from curate.similarity import nearest_neighbours
            parts = list(made[-1].nearest())
            found = np.concatenate([sims for sims, _ in parts]), np.concatenate([ids for _, ids in parts])
            local = nearest_neighbours(vectors, channel[0].kind, **options)
            assert np.array_equal(found[1], local[1]) and np.array_equal(found[0], local[0])
            assert any(cost.task == "choose_nearest" for cost in made[-1].costs)
        else:
            assert made[-1].nearest() is None
    assert list(tmp_path.iterdir()) == []          # the work files are gone
