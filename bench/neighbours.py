"""The report's nearest-neighbour search alone (`curate.similarity.nearest_neighbours`: each
image's 16 nearest in its group), on planted 768-d vectors, this build against a commit, each
in its own process, same run: wall and CPU seconds, peak RSS, and a hash of the neighbours.

    python bench/neighbours.py --vectors 30000 60000 --baseline e19a496
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table  # noqa: E402


def child(n: int, index: str) -> dict:
    import hashlib
    import resource
    import time
    from index_scale import planted
    from curate.registry import get_registry
    from curate.similarity import nearest_neighbours
    vectors = planted(n, 768)
    wall, cpu = time.perf_counter(), time.process_time()
    sims, ids = nearest_neighbours(vectors, get_registry().get("index", index))
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "vectors_mb": vectors.nbytes / 2 ** 20,
            "neighbours": hashlib.sha256(ids.tobytes() + sims.tobytes()).hexdigest()[:16]}


def measure(n: int, index: str, pythonpath: str | None) -> dict:
    env = dict(os.environ, PYTHONPATH=pythonpath) if pythonpath else None
    result = subprocess.run([sys.executable, __file__, "--child", str(n), "--index", index],
                            capture_output=True, text=True, env=env)
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, nargs="+", default=[30_000, 60_000])
    parser.add_argument("--index", default="exact")
    parser.add_argument("--baseline", help="a commit to measure too, in the same run")
    parser.add_argument("--child", type=int)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.index)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        builds = [("this build", None)]
        if args.baseline:
            from quality import baseline_tree
            builds.insert(0, (args.baseline, str(baseline_tree(args.baseline, Path(tmp)))))
        for n in args.vectors:
            for label, pythonpath in builds:
                r = measure(n, args.index, pythonpath)
                rows.append([f"{n:,}", label, f"{r['wall']:.1f}", f"{r['cpu']:.1f}", f"{r['peak_mb']:,.0f}",
                             f"{r['vectors_mb']:,.0f}", r["neighbours"]])
                print(*rows[-1], sep=" | ", flush=True)
    if args.baseline:                 # the baseline's worktree went with the temporary folder
        subprocess.run(["git", "-C", str(Path(__file__).parent.parent), "worktree", "prune"], check=False)
    print_table(f"nearest_neighbours, {args.index} index, planted 768-d vectors",
                ["vectors", "build", "wall s", "CPU s", "peak RSS MB", "vectors MB", "neighbours"], rows)


if __name__ == "__main__":
    main()
