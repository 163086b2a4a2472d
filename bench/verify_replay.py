"""The verifier alone, on the pairs a real dedup run verified: CPU and verdicts, this tree
against a commit, in the same run.

A cold `curate dedup` spends most of its CPU in the verifier on text-rich images and about half
of it on photos (bench/README.md, "CPU cost against fastdup"). This bench records the candidate
pairs one default run of a quality set hands to the verifier, then replays them (each image
prepared once, every pair compared, as the walk does) in a fresh process per build, rounds
alternating, and checks that every verdict, score and detail is the same.

    python bench/quality.py --set photos --keep /tmp/qp --no-cpu     # builds the set once
    python bench/verify_replay.py /tmp/qp --against <commit> --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, print_table  # noqa: E402
from quality import baseline_tree  # noqa: E402

REPLAY = r"""
import json, resource, sys
from pathlib import Path
from curate.plugins.verifiers import ContentVerifier

def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

root, pairs = Path(sys.argv[1]), json.load(open(sys.argv[2]))
verifier = ContentVerifier()
prepared, verdicts = {}, []
prepare_cpu = compare_cpu = 0.0
for kept, candidate in pairs:
    for path in (kept, candidate):
        if path not in prepared:
            start = cpu()
            prepared[path] = verifier.prepare(root / path)
            prepare_cpu += cpu() - start
    start = cpu()
    verdict = verifier.compare(prepared[kept], prepared[candidate])
    compare_cpu += cpu() - start
    verdicts.append([verdict.same, verdict.score, verdict.detail])
print(json.dumps({"prepare": prepare_cpu, "compare": compare_cpu, "verdicts": verdicts}))
"""


def record_pairs(folder: Path, out: Path) -> list[list[str]]:
    """The (kept, candidate) image paths the verifier compares in a default dedup of ``folder``."""
    script = r"""
import json, sys
import curate.verification as verification
from curate.cli import get_registry, prepare
seen = []
original = verification.PairVerifier._compare
def recording(self, kept, candidate):
    seen.append([self.paths[kept], self.paths[candidate]])
    return original(self, kept, candidate)
verification.PairVerifier._compare = recording
try:
    prepare(get_registry())(["dedup", sys.argv[1] + "/data.json", "--image-root", sys.argv[1] + "/images", "--scope", "global",
          "--embedder", "timm-pool", "-q", "--overwrite", "-o", sys.argv[2] + "/out.json"], standalone_mode=False)
finally:
    json.dump(seen, open(sys.argv[2] + "/pairs.json", "w"))
"""
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run([sys.executable, "-c", script, str(folder), scratch], check=True)
        pairs = json.loads((Path(scratch) / "pairs.json").read_text())
    out.write_text(json.dumps(pairs))
    return pairs


def replay(folder: Path, pairs_file: Path, pythonpath: Path | None) -> dict:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    result = subprocess.run([sys.executable, "-c", REPLAY, str(folder / "images"), str(pairs_file)],
                            check=True, capture_output=True, text=True, env=env)
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a quality set built with bench/quality.py --keep")
    parser.add_argument("--against", help="commit to compare with (verdicts and CPU), same run")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds (median)")
    parser.add_argument("--pairs", type=Path, help="pairs recorded before (default: <folder>/verified-pairs.json, "
                                                   "recorded on first use)")
    args = parser.parse_args()
    pairs_file = args.pairs or args.folder / "verified-pairs.json"
    pairs = json.loads(pairs_file.read_text()) if pairs_file.exists() else record_pairs(args.folder, pairs_file)
    images = len({path for pair in pairs for path in pair})
    print(f"{len(pairs)} pairs over {images} images ({pairs_file})")
    builds = {"this tree": None}
    with tempfile.TemporaryDirectory() as scratch:
        if args.against:
            builds[args.against] = baseline_tree(args.against, Path(scratch))
        runs: dict[str, list[dict]] = {name: [] for name in builds}
        try:
            for _ in range(args.repeats):
                for name, path in builds.items():
                    runs[name].append(replay(args.folder, pairs_file, path))
        finally:
            if args.against:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=False)
    rows = []
    for name, results in runs.items():
        prepare = statistics.median(r["prepare"] for r in results)
        compare = statistics.median(r["compare"] for r in results)
        rows.append([name, f"{prepare:.2f}", f"{compare:.2f}", f"{prepare + compare:.2f}",
                     f"{1000 * (prepare + compare) / len(pairs):.1f}"])
    print_table("verifier CPU (median of rounds)", ["build", "prepare s", "compare s", "total s", "ms per pair"], rows)
    if args.against:
        mine, theirs = runs["this tree"], runs[args.against]
        ratios = [(a["prepare"] + a["compare"]) / (b["prepare"] + b["compare"]) for a, b in zip(mine, theirs)]
        print(f"per round, this tree / {args.against}: " + ", ".join(f"{r:.2f}" for r in ratios))
        differ = [(pair, a, b) for pair, a, b in zip(pairs, mine[0]["verdicts"], theirs[0]["verdicts"]) if a != b]
        print(f"verdicts, scores and details that differ: {len(differ)} of {len(pairs)}")
        for pair, a, b in differ[:20]:
            print(f"  {pair}: {b} -> {a}")
    same = sum(1 for v in runs["this tree"][0]["verdicts"] if v[0])
    print(f"verified same: {same} of {len(pairs)}")


if __name__ == "__main__":
    main()
