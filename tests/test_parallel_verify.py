"""Verification on threads: a verifier that allows it (``Verifier.parallel``) compares the pairs
the walk will ask for next while the walk decides, and the decisions are those of one thread."""

import json
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import curate
from conftest import FIXTURES
from curate.errors import CurateError
from curate.plugins.indexes import Exact
from curate.similarity import Channel, walk
from curate.verification import PairVerifier

TURNS = [{"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "A picture."}]


class Scripted(curate.Verifier):
    """A verifier whose verdict is a fixed function of the pair; records where it ran. With
    ``meet``, its first two comparisons wait for each other: they can only both finish when two
    threads run them at once."""

    name = "scripted"
    parallel = True

    def __init__(self, meet: bool = False, fails: tuple = ()):
        self.prepared, self.compared, self.threads = [], [], set()
        self.lock = threading.Lock()
        self.barrier = threading.Barrier(2) if meet else None
        self.fails = fails

    def prepare(self, path):
        with self.lock:
            self.prepared.append(path.name)
        return path.name

    def compare(self, kept, candidate):
        with self.lock:
            self.compared.append((kept, candidate))
            first_two = len(self.compared) <= 2
            self.threads.add(threading.current_thread().name)
        if self.barrier is not None and first_two:
            self.barrier.wait(timeout=60)           # broken (an error) if no second thread comes
        if (kept, candidate) in self.fails:
            raise ZeroDivisionError("oops")
        key = sum(i * ord(ch) for i, ch in enumerate(kept + candidate))       # not symmetric
        return curate.Verdict(key % 3 != 0, float(key % 7), "scripted")


def clustered(n=240, seed=0):
    """Vectors in clusters of look-alikes: each image has several earlier kept images to try."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n // 8, 32)).astype(np.float32)
    vectors = centres[rng.integers(0, len(centres), n)] + 0.05 * rng.normal(size=(n, 32)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def paths(n):
    return [f"img{i:04d}.png" for i in range(n)]


def run_walk(verifier, threads, vectors):
    with PairVerifier(verifier, paths(len(vectors)), "/nowhere", threads) as pairs:
        result = walk([Channel("embedding", vectors, 0.9, Exact())], verify=pairs)
        return result, pairs


def test_decisions_on_threads_are_those_of_one_thread():
    vectors = clustered()
    alone, one = run_walk(Scripted(), 1, vectors)
    together, many = run_walk(threaded := Scripted(meet=True), 2, vectors)
    assert together.duplicate_of.tolist() == alone.duplicate_of.tolist()
    assert together.score.tolist() == alone.score.tolist()
    assert {i: v.score for i, v in together.verdicts.items()} == {i: v.score for i, v in alone.verdicts.items()}
    assert [(k, c, v.score) for k, c, _, _, v in together.refused] == [(k, c, v.score) for k, c, _, _, v in alone.refused]
    assert (together.duplicate_of >= 0).sum() > 20 and len(together.refused) > 20     # both outcomes occur
    assert threaded.threads == {"curate-verify_0", "curate-verify_1"}  # never the walk's own thread
    names = paths(len(vectors))
    asked = {(names[kept], names[candidate]) for kept, candidate in one.verdicts}
    assert asked <= set(threaded.compared)                          # each pair the walk asked was compared,
    assert len(threaded.compared) == len(set(threaded.compared))    # once,
    assert len(threaded.compared) <= 1.1 * len(asked)               # and little for nothing
    assert sorted(threaded.prepared) == sorted(set(threaded.prepared))     # each image prepared once


def test_a_verifier_that_does_not_say_parallel_runs_on_the_walks_thread():
    class Sequential(Scripted):
        parallel = False

    verifier = Sequential()
    result, pairs = run_walk(verifier, 4, clustered())
    assert pairs.room() == 0 and verifier.threads == {threading.current_thread().name}
    assert (result.duplicate_of >= 0).any()


def test_a_failure_of_a_pair_compared_ahead_comes_when_the_walk_asks_for_it():
    verifier = Scripted(fails=(("img0000.png", "img0002.png"),))
    with PairVerifier(verifier, paths(4), "/nowhere", threads=2) as pairs:
        pairs.prefetch([(0, 1), (0, 2), (0, 3)])
        assert pairs(0, 1).detail == "scripted"                    # the failure is not raised here
        with pytest.raises(CurateError, match="verifier 'scripted' failed on 'img0000.png' and 'img0002.png'"):
            pairs(0, 2)
        assert pairs(0, 3).detail == "scripted"
    with PairVerifier(verifier, paths(4), "/nowhere", threads=2) as pairs:
        pairs.prefetch([(0, 2)])                                    # compared ahead, never asked: no error


def test_an_image_is_prepared_once_whichever_threads_need_it():
    verifier = Scripted()
    with PairVerifier(verifier, paths(40), "/nowhere", threads=4) as pairs:
        wanted = [(0, c) for c in range(1, 40)] + [(1, c) for c in range(2, 40)]
        pairs.prefetch(wanted)
        verdicts = [pairs(*pair) for pair in wanted]
    assert len(verdicts) == len(wanted) and sorted(verifier.prepared) == sorted(paths(40))


# `curate dedup` with a verifier on threads whose comparisons hold until the test lets them go
STALLING = """
import pathlib, sys, time, types
import curate
from curate import registry

started, release = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])

class Stalling(curate.Verifier):
    name = "stalling"
    parallel = True

    def prepare(self, path):
        return path

    def compare(self, kept, candidate):
        started.touch()
        while not release.exists():
            time.sleep(0.01)
        return curate.Verdict(True, 0.0, "stalled")

plugin = types.SimpleNamespace(register_verifiers=curate.hookimpl(lambda register: register(Stalling())))
registry._REGISTRY = registry.load_registry(extra_plugins=[plugin])
sys.argv = ["curate", *sys.argv[3:]]
from curate.entry import main
main()
"""


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_the_walk_waits_for_the_threads_is_a_clean_interruption(tmp_path, signum, code):
    """The walk's thread waits for a verdict that threads are computing: the signal ends the run
    as usual (exit code, one line, no output), once the comparisons under way have finished."""
    records = []
    for i in range(4):
        shutil.copy(FIXTURES / "images" / "coco/train2017/000000000001.jpg", tmp_path / f"copy{i}.jpg")
        records.append({"id": f"r{i}", "image": f"copy{i}.jpg", "conversations": TURNS})
    (tmp_path / "in.json").write_text(json.dumps(records))
    started, release, out = tmp_path / "started", tmp_path / "release", tmp_path / "out.json"
    process = subprocess.Popen(
        [sys.executable, "-c", STALLING, str(started), str(release), "dedup", str(tmp_path / "in.json"), "-o", str(out),
         "--image-root", str(tmp_path), "--embedder", "timm-pool", "--no-cache", "--signals", "embedding",
         "--verify", "stalling", "--workers", "2", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not started.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert started.exists(), process.communicate()[1]
        process.send_signal(signum)
        release.touch()
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == code, stderr
    assert stderr.strip().splitlines()[-1] == "error: interrupted; no output was written"
    assert "Traceback" not in stderr and not out.exists()


@pytest.mark.parametrize("block", [64, 4096])
def test_the_walk_tells_its_progress_as_it_passes_the_images(block):
    """A verified walk on a large set takes a while: the search bar moves with the images walked."""
    vectors = clustered(n=480)
    told = []
    result = walk([Channel("embedding", vectors, 0.9, Exact())], block=block, progress=told.append,
                  verify=lambda kept, candidate: curate.Verdict(True, 0.0, "test"))
    assert sum(told) == len(vectors) and all(count > 0 for count in told)
    assert len(told) >= 480 // 16 // 2          # every few images with pairs, not once at the end
    assert (result.duplicate_of >= 0).sum() > 100
