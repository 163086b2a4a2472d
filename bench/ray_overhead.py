"""The Ray engine's overhead against the local engine, on one machine: the same images
embedded by `curate embed --engine local` and `--engine ray` (a local Ray instance).

    python bench/ray_overhead.py --images 400
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table, run_measured  # noqa: E402
from dedup_e2e import make_root  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    curate = [sys.executable, "-m", "curate.cli"]
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent.parent) as tmp:
        tmp = Path(tmp)
        data = make_root(tmp / "root", args.images)
        rows, walls = [], {}
        for engine in ("local", "ray"):
            runs = [run_measured([*curate, "embed", str(data), "--image-root", str(tmp / "root"), "--embedder",
                                  "timm-pool", "--no-cache", "-o", str(tmp / f"{engine}.npy"), "--overwrite", "-q",
                                  "--engine", engine]) for _ in range(args.repeats)]
            walls[engine] = sorted(r[0] for r in runs)[len(runs) // 2]
            rows.append([engine, f"{walls[engine]:.1f}", f"{args.images / walls[engine]:.1f}",
                         f"{walls[engine] / walls['local']:.2f}"])
        print_table(f"curate embed, timm-pool, {args.images} images, whole command wall time (median of "
                    f"{args.repeats})", ["engine", "wall s", "images/s", "ratio to local"], rows)
        print(f"\nratio: ray / local = {walls['ray'] / walls['local']:.2f}")


if __name__ == "__main__":
    main()
