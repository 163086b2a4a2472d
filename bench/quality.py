"""Dedup quality and cost on the two quality sets (photos: bench/quality_set.py; text-rich
images: bench/quality_text_set.py), against imagededup's perceptual hashes and fastdup's
embedding (given a Python that has them: --peers-python), all measured in the same run.

For each method: recall (near-duplicates removed as a duplicate of their own photo) and false
removals (an image removed as a duplicate of another photo), with default settings and at the
best threshold (the one with the highest recall among those that remove nothing distinct), per
edit type; and CPU ms per image of a cold whole-process run.

    python bench/quality.py [--keep DIR] [--peers-python PYTHON]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, print_table  # noqa: E402
from quality_set import build  # noqa: E402
from quality_text_set import build as build_text  # noqa: E402

SETS = {"photos": build, "text": build_text}

SWEEP = [round(t, 2) for t in np.arange(0.98, 0.49, -0.01)]


def score(truth: dict, order: list[str], duplicate_of: dict[str, str]) -> dict:
    """Recall and false removals of one decision (removed image -> the kept image it duplicates)."""
    per_edit: dict[str, list[int]] = {}
    per_family: dict[str, list[int]] = {}
    false, lost = [], []
    for image in order:
        edit = truth[image]["edit"]
        partner = duplicate_of.get(image)
        right = partner is not None and truth[partner]["cluster"] == truth[image]["cluster"]
        if partner is not None and not right:
            false.append((image, partner))
            if edit == "original":
                lost.append(image)
        if edit != "original":
            for key, table in ((edit, per_edit), (truth[image].get("family", "photo"), per_family)):
                found = table.setdefault(key, [0, 0])
                found[0] += right
                found[1] += 1
    found = sum(f for f, _ in per_edit.values())
    total = sum(n for _, n in per_edit.values())
    return {"recall": found / total, "false": len(false), "lost": len(lost), "per_edit": per_edit,
            "per_family": per_family, "false_pairs": false}


def best_of(results: dict[float, dict]) -> tuple[float, dict]:
    """The threshold with the highest recall among those with no false removal (ties: the highest)."""
    clean = [(r["recall"], t) for t, r in results.items() if r["false"] == 0]
    recall, threshold = max(clean) if clean else (0.0, None)
    return threshold, results.get(threshold)


def cpu_of(command: list[str], env=None) -> tuple[float, float]:
    """CPU seconds (user + system) of a child process and its children, and its wall seconds."""
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
    wall, after = time.monotonic() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def baseline_tree(commit: str, where: Path) -> Path:
    """``curate`` as of ``commit``, importable with PYTHONPATH=<returned folder>: CPU is compared
    with the code before this change in the same run."""
    tree = where / f"curate-{commit[:10]}"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(tree / "src"), commit],
                   check=True, capture_output=True)
    package = tree / "curate"
    shutil.copytree(tree / "src" / "core", package)
    shutil.copytree(tree / "src" / "plugins", package / "plugins")
    return tree


def cold_cpu(folder: Path, pythonpath: Path | None, label: str) -> tuple[float, float]:
    """CPU and wall seconds of one cold whole-process `curate dedup` (start-up, model, every image)."""
    out = folder / f"cold-{label}.json"
    env = dict(os.environ, PYTHONPATH=str(pythonpath)) if pythonpath else None
    return cpu_of([sys.executable, "-m", "curate", "dedup", str(folder / "data.json"), "--image-root",
                   str(folder / "images"), "--scope", "global", "--embedder", "timm-pool", "-q", "--overwrite",
                   "--no-cache", "-o", str(out)], env)


def curate_quality(folder: Path, truth: dict, order: list[str], signals: tuple, verify: str = "content",
                   sweep=SWEEP) -> dict:
    """Quality of one signal set, with default thresholds and swept over the embedding's."""
    import curate
    inputs = curate.Inputs([folder / "data.json"], image_root=folder / "images")
    spec = curate.EmbedderSpec("timm-pool")
    settings = curate.EmbedSettings(cache_dir=folder / "cache")
    results = {}
    for thresholds in (None, sweep):
        found = curate.identify_duplicates(inputs, spec, curate.SearchSettings(thresholds, "global", signals=signals,
                                                                                 verify=verify), settings)
        for result in found.thresholds:
            pairs = {found.images.paths[j]: found.images.paths[result.duplicate_of[j]]
                     for j in np.flatnonzero(result.duplicate_of >= 0)}
            results[(thresholds is None, result.threshold)] = score(truth, order, pairs)
    default = next(r for (is_default, _), r in results.items() if is_default)
    default_threshold = next(t for (is_default, t) in results if is_default)
    return {"default": default, "default_threshold": default_threshold,
            "sweep": {t: r for (is_default, t), r in results.items() if not is_default}}


IMAGEDEDUP = """
import json, resource, sys
from imagededup import methods
hasher = getattr(methods, sys.argv[2])(verbose=False)
codes = hasher.encode_images(image_dir=sys.argv[1], recursive=True, num_enc_workers=0)
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"codes": codes, "cpu": usage.ru_utime + usage.ru_stime}))
"""


def imagededup_run(python: str, images: Path, truth: dict, order: list[str], method: str) -> dict | None:
    """imagededup's hash (in its own environment, whole process timed), with the same
    keep-the-first walk over Hamming distances; its default distance is 10."""
    started = time.monotonic()
    result = subprocess.run([python, "-c", IMAGEDEDUP, str(images), method], capture_output=True, text=True)
    wall = time.monotonic() - started
    if result.returncode:
        print(f"imagededup {method} failed: {result.stderr[-500:]}")
        return None
    data = json.loads(result.stdout.strip().splitlines()[-1])
    bits = {str(Path(k).relative_to(images)) if Path(k).is_absolute() else k: v for k, v in data["codes"].items()}
    codes = np.array([int(bits[p], 16) for p in order], dtype=np.uint64)
    distance = np.bitwise_count(codes[:, None] ^ codes[None, :]).astype(np.int64)
    sweep = {d: score(truth, order, greedy(order, distance <= d, -distance)) for d in range(0, 33)}
    return {"cpu": data["cpu"], "wall": wall, "default": sweep[10], "default_threshold": 10, "sweep": sweep}


FASTDUP = """
import json, os, resource, sys, fastdup
fd = fastdup.create(work_dir=sys.argv[2], input_dir=sys.argv[1])
fd.run(threshold=0.5, nearest_neighbors_k=10, overwrite=True)
pairs = [[os.path.abspath(r.filename_from), os.path.abspath(r.filename_to), float(r.distance)]
         for r in fd.similarity().itertuples()]
usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
print(json.dumps({"pairs": pairs, "cpu": sum(u.ru_utime + u.ru_stime for u in usage)}))
"""
FASTDUP_DEFAULT = 0.9      # fastdup.run(threshold=0.9): its default for "similar"


def fastdup_run(python: str, images: Path, truth: dict, order: list[str]) -> dict | None:
    """fastdup (its own bundled ONNX model, offline; whole process timed) asked for every pair
    at similarity >= 0.5 among each image's 10 nearest, then the same keep-the-first walk."""
    with tempfile.TemporaryDirectory() as work:
        started = time.monotonic()
        result = subprocess.run([python, "-c", FASTDUP, str(images.resolve()), work], capture_output=True,
                                text=True, cwd=work)
        wall = time.monotonic() - started
    if result.returncode:
        print(f"fastdup failed: {result.stderr[-500:]}")
        return None
    data = json.loads(result.stdout.strip().splitlines()[-1])
    position = {p: i for i, p in enumerate(order)}
    sims = np.full((len(order), len(order)), -np.inf, np.float32)
    root = images.resolve()
    for a, b, sim in data["pairs"]:
        i, j = (position[str(Path(p).relative_to(root))] for p in (a, b))
        sims[i, j] = sims[j, i] = max(sims[i, j], sim)
    sweep = {t: score(truth, order, greedy(order, sims >= t, sims)) for t in SWEEP}
    return {"cpu": data["cpu"], "wall": wall, "default": sweep[FASTDUP_DEFAULT], "default_threshold": FASTDUP_DEFAULT,
            "sweep": sweep}


def greedy(order, similar, strength) -> dict[str, str]:
    kept, pairs = [], {}
    for j, image in enumerate(order):
        partners = [i for i in kept if similar[j, i]]
        if partners:
            pairs[image] = order[max(partners, key=lambda i: strength[j, i])]
        else:
            kept.append(j)
    return pairs


SIGNAL_SETS = {"embedding only, no verification": (("embedding",), "none"),
               "default signals, no verification (--verify none)": (("exact", "embedding", "phash"), "none"),
               "default signals, verified (default)": (("exact", "embedding", "phash"), "content")}
VERIFIED_SWEEP = [0.95, 0.9, 0.85, 0.8, 0.75, 0.7]   # verification per threshold costs; a coarser sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="build the set here and keep it (default: a temporary folder)")
    parser.add_argument("--baseline", default="10c358b",
                        help="commit whose cold CPU per image is the baseline (the code before issue #12)")
    parser.add_argument("--repeats", type=int, default=2, help="cold runs per configuration (median)")
    parser.add_argument("--peers-python", default=None,
                        help="a Python with imagededup and fastdup installed (benchmark-only; not curate dependencies)")
    parser.add_argument("--set", choices=SETS, default="photos", help="which quality set")
    parser.add_argument("--no-cpu", action="store_true", help="skip the cold CPU comparison with --baseline")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        truth = SETS[args.set](folder)
        order = [r["image"] for r in json.loads((folder / "data.json").read_text())]
        n = len(order)
        cpu_before = cpu_after = None
        if not args.no_cpu:
            baseline = baseline_tree(args.baseline, Path(tmp))
            try:
                cpu_before, cpu_after = [], []
                for _ in range(args.repeats):           # interleaved: a load that comes and goes hits both
                    cpu_before.append(cold_cpu(folder, baseline, "before"))
                    cpu_after.append(cold_cpu(folder, None, "after"))
                wall_before, wall_after = sorted(w for _, w in cpu_before), sorted(w for _, w in cpu_after)
                cpu_before, cpu_after = sorted(c for c, _ in cpu_before), sorted(c for c, _ in cpu_after)
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline / "src")],
                               capture_output=True)
            middle = len(cpu_before) // 2
            cpu_before, cpu_after, wall_before, wall_after = (
                cpu_before[middle], cpu_after[middle], wall_before[middle], wall_after[middle])
        methods = {}
        for label, (signals, verify) in SIGNAL_SETS.items():
            methods[f"curate, {label}"] = curate_quality(folder, truth, order, signals, verify,
                                                         VERIFIED_SWEEP if verify != "none" else SWEEP)
        if cpu_after is not None:
            methods[f"curate, {list(SIGNAL_SETS)[-1]}"].update(cpu=cpu_after, wall=wall_after)
        for method in ("PHash", "AHash", "DHash", "WHash") if args.peers_python else ():
            result = imagededup_run(args.peers_python, folder / "images", truth, order, method)
            if result:
                methods[f"imagededup {method}"] = result
        if args.peers_python:
            result = fastdup_run(args.peers_python, folder / "images", truth, order)
            if result:
                methods["fastdup"] = result
        rows = []
        for name, result in methods.items():
            threshold, best = best_of(result["sweep"])
            d = result["default"]
            cpu = f"{1000 * result['cpu'] / n:.0f}" if "cpu" in result else ""
            wall = f"{1000 * result['wall'] / n:.0f}" if "wall" in result else ""
            rows.append([name, result["default_threshold"], f"{d['recall']:.1%}", d["false"], d.get("lost", "-"),
                         threshold, f"{best['recall']:.1%}" if best else "-", cpu, wall])
        print_table(f"dedup quality on {n} images ({sum(t['edit'] != 'original' for t in truth.values())} "
                    "near-duplicates, --scope global)",
                    ["method", "default threshold", "recall (default)", "false removals (default)",
                     "distinct images removed (default)", "best threshold", "recall (best, 0 false)",
                     "CPU ms/image (cold)", "wall ms/image (cold)"], rows)
        families = sorted({t.get("family", "photo") for t in truth.values()})
        if len(families) > 1:
            print_table("per family with defaults: near-duplicates found / distinct removed",
                        ["family", *methods],
                        [[family, *(f"{r['default']['per_family'][family][0]}/{r['default']['per_family'][family][1]}"
                                    f" / {sum(truth[i].get('family') == family for i, _ in r['default']['false_pairs'] if truth[i]['edit'] == 'original')}"
                                    for r in methods.values())] for family in families])
        edit_rows = []
        edits = sorted({t["edit"] for t in truth.values()} - {"original"})
        for edit in edits:
            row = [edit]
            for name, result in methods.items():
                _, best = best_of(result["sweep"])
                found, total = result["default"]["per_edit"][edit]
                row.append(f"{found}/{total}" + (f" ({best['per_edit'][edit][0]})" if best else ""))
            edit_rows.append(row)
        print_table("found per edit: default (at the best threshold)", ["edit", *methods], edit_rows)
        if cpu_after is not None:
            print(f"\ncold CPU per image: before (commit {args.baseline}) {1000 * cpu_before / n:.0f} ms, "
                  f"after {1000 * cpu_after / n:.0f} ms")
            print(f"ratio: CPU per image, after / before = {cpu_after / cpu_before:.2f}")
            print(f"wall per image: before {1000 * wall_before / n:.0f} ms, after {1000 * wall_after / n:.0f} ms "
                  f"(ratio {wall_after / wall_before:.2f}; {os.cpu_count()} CPUs)")
        for name, result in methods.items():
            for pair in result["default"]["false_pairs"][:5]:
                print(f"false removal ({name}, default):", pair)


if __name__ == "__main__":
    main()
