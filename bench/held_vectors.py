"""`curate dedup` of many images from a full cache: the process's memory with the run's vectors
held in memory (a commit from before they were mapped from a file) against this build, same
run, same decisions.

    python bench/held_vectors.py --images 500000 --baseline bc356aa

N tiny image files (one PNG's bytes each) and a cache that holds planted vectors for them
(bench/index_scale.py's: 30% in clusters of near-duplicates), appended through curate's own
cache, so `curate dedup --embedder timm-pool` takes every vector from the cache and the run
is the scan, the walk and the writing. `--signals embedding --verify none`: the vectors alone
decide (nothing here is a picture to compare). Each run is sampled every 50 ms for its
anonymous memory (RssAnon: what it allocated; a mapped file's pages are not in it) and its
peak RSS (VmHWM: mapped pages it touched included).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table  # noqa: E402
from index_scale import planted  # noqa: E402
from quality import ROOT, baseline_tree  # noqa: E402

APPEND_ROWS = 65_536


def make_images(root: Path, count: int) -> Path:
    """``count`` image files (the same tiny PNG) and a LLaVA file with a record for each."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 30, 200)).save(buffer, "PNG")
    png = buffer.getvalue()
    images = root / "images"
    records = []
    for i in range(count):
        relative = f"{i // 10_000:03d}/{i:07d}.png"
        if i % 10_000 == 0:
            (images / relative).parent.mkdir(parents=True, exist_ok=True)
        (images / relative).write_bytes(png)
        records.append({"id": i, "image": relative,
                        "conversations": [{"from": "human", "value": "<image>\nWhat is it?"},
                                          {"from": "gpt", "value": "A square."}]})
    data = root / "data.json"
    data.write_text(json.dumps(records))
    return data


def fill_cache(data: Path, images: Path, cache: Path, count: int) -> int:
    """The cache folder of timm-pool made by `curate embed` on the first image, then planted
    vectors for every image appended through curate's EmbeddingCache (its keys and checks)."""
    first = data.parent / "first.json"
    first.write_text(json.dumps(json.loads(data.read_text())[:1]))
    subprocess.run([sys.executable, "-m", "curate", "embed", str(first), "--image-root", str(images),
                    "--embedder", "timm-pool", "--cache", str(cache), "-q"], check=True)
    from curate.cache import CacheIdentity, EmbeddingCache, image_key
    metas = [json.loads(p.read_text()) for p in cache.glob("*/meta.json")]
    identity = CacheIdentity(**next(m for m in metas if m["embedder"] == "timm-pool"))     # not a signal's
    store = EmbeddingCache(cache, identity)
    vectors = planted(count, identity.dim)
    paths = [images / f"{i // 10_000:03d}/{i:07d}.png" for i in range(count)]
    for start in range(1, count, APPEND_ROWS):         # the first image's row is the model's own
        stop = min(count, start + APPEND_ROWS)
        store.append([image_key(p) for p in paths[start:stop]], vectors[start:stop])
    del store
    return identity.dim


def measured(command: list[str], env: dict) -> dict:
    """Wall and CPU seconds, peak anonymous memory and peak RSS (MB) of one run."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    anon = hwm = 0
    while True:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            anon = max(anon, int(fields.get("RssAnon", "0 kB").split()[0]))
            hwm = max(hwm, int(fields.get("VmHWM", "0 kB").split()[0]))
        except (OSError, ValueError):
            pass
        pid, code, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.05)
    if code:
        raise SystemExit(f"failed ({code}): {' '.join(command)}")
    return {"wall": time.perf_counter() - started, "cpu": usage.ru_utime + usage.ru_stime,
            "anon": anon / 1024, "peak": max(hwm, usage.ru_maxrss) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500_000)
    parser.add_argument("--baseline", default="bc356aa", help="a commit whose runs hold every vector in memory")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--folder", default=str(ROOT), help="where the images, cache and outputs go")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="held-vectors-", dir=args.folder) as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        data = make_images(tmp, args.images)
        dim = fill_cache(data, tmp / "images", tmp / "cache", args.images)
        print(f"{args.images:,} images and their cache made in {time.perf_counter() - started:.0f} s")
        baseline = baseline_tree(args.baseline, tmp)
        rows, digests = [], {}
        try:
            for label, pythonpath in ((f"held ({args.baseline})", str(baseline)), ("mapped (this build)", None)):
                out = tmp / f"out-{len(rows)}.json"
                env = dict(os.environ, **({"PYTHONPATH": pythonpath} if pythonpath else {}))
                run = measured([sys.executable, "-m", "curate", "dedup", str(data), "--image-root",
                                str(tmp / "images"), "--embedder", "timm-pool", "--signals", "embedding",
                                "--verify", "none", "--scope", "global", "--cache", str(tmp / "cache"),
                                "-t", str(args.threshold), "-q", "-o", str(out)], env)
                digests[label] = hashlib.sha256(out.read_bytes()).hexdigest()[:16]
                kept = len(json.loads(out.read_text()))
                rows.append([label, f"{run['wall']:.1f}", f"{run['cpu']:.1f}", f"{run['anon']:,.0f}",
                             f"{run['peak']:,.0f}", f"{kept:,}", digests[label]])
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline / "src")],
                           capture_output=True)
    vectors_mb = args.images * dim * 4 / 2**20
    print_table(f"`curate dedup` of {args.images:,} images from a full cache ({dim}-d vectors: {vectors_mb:,.0f} MB), "
                f"-t {args.threshold}, load {os.getloadavg()[0]:.1f} at the end",
                ["run", "wall s", "CPU s", "peak anon MB", "peak RSS MB", "kept", "output"], rows)
    print(f"same output: {len(set(digests.values())) == 1}")


if __name__ == "__main__":
    main()
