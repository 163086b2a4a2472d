"""Index: every pair at similarity >= 0.8 and >= 0.9 among 768-d vectors with planted
near-duplicate clusters, hnsw against exact, at several sizes.

    python bench/index_scale.py --sizes 25000 50000 100000 --exact-max 100000

Reports wall time, recall of exact's pairs, and the crossover; exact beyond --exact-max is
projected from its measured quadratic curve.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table  # noqa: E402

THRESHOLDS = (0.8, 0.9)


def planted(n: int, dim: int = 768, seed: int = 0) -> np.ndarray:
    """Unrelated unit vectors plus clusters of 2-10 near-duplicates (similarity about 0.8-0.99)."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    i = 0
    while i < n * 0.3:
        size = int(rng.integers(2, 11))
        noise = rng.uniform(0.1, 0.7)
        base = vectors[i]
        for j in range(i + 1, min(i + size, n)):
            vectors[j] = base + noise * rng.normal(size=dim).astype(np.float32)
        i += size
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors[rng.permutation(n)]


def all_pairs(kind, vectors, threshold, **options):
    start = time.perf_counter()
    index = kind.new(vectors.shape[1], len(vectors), **options)
    index.add(vectors)
    rows, ids, _ = index.range_search(vectors, threshold)
    keep = rows < ids
    pairs = set(zip(rows[keep].tolist(), ids[keep].tolist()))
    return pairs, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[25_000, 50_000, 100_000, 200_000])
    parser.add_argument("--exact-max", type=int, default=100_000, help="largest size to run exact on")
    args = parser.parse_args()
    from curate.registry import get_registry
    registry = get_registry()
    exact, hnsw = registry.get("index", "exact"), registry.get("index", "hnsw")
    rows, curve = [], {}
    for n in args.sizes:
        vectors = planted(n)
        for threshold in THRESHOLDS:
            found_h, t_h = all_pairs(hnsw, vectors, threshold)
            if n <= args.exact_max:
                found_e, t_e = all_pairs(exact, vectors, threshold)
                recall = len(found_e & found_h) / max(1, len(found_e))
                curve[(n, threshold)] = (t_e, t_h)
                rows.append([f"{n:,}", threshold, f"{len(found_e):,}", f"{t_e:.1f}", f"{t_h:.1f}",
                             f"{t_e / t_h:.2f}", f"{recall:.4f}"])
            else:
                measured = [(m, te) for (m, t), (te, _) in curve.items() if t == threshold]
                m, te = max(measured)
                projected = te * (n / m) ** 2
                curve[(n, threshold)] = (projected, t_h)
                rows.append([f"{n:,}", threshold, "-", f"{projected:.0f} (projected)", f"{t_h:.1f}",
                             f"{projected / t_h:.2f}", "-"])
    print_table("every pair >= t among 768-d vectors (wall s; speed-up = exact / hnsw)",
                ["vectors", "t", "exact pairs", "exact s", "hnsw s", "exact/hnsw", "hnsw recall"], rows)
    # project to 1M from the two largest sizes of each curve (exact ~ n^2, hnsw ~ n log n)
    for threshold in THRESHOLDS:
        points = sorted((n, te, th) for (n, t), (te, th) in curve.items() if t == threshold)
        n, te, th = points[-1]
        exact_1m = te * (1e6 / n) ** 2
        hnsw_1m = th * (1e6 / n) * np.log(1e6) / np.log(n)
        print(f"t={threshold}: projected at 1M vectors: exact {exact_1m / 3600:.1f} h, hnsw {hnsw_1m / 60:.0f} min, "
              f"hnsw {exact_1m / hnsw_1m:.0f}x faster")
    crossover = [n for (n, t), (te, th) in sorted(curve.items()) if t == THRESHOLDS[0] and th < te]
    print(f"crossover (hnsw faster than exact from): {crossover[0]:,} vectors" if crossover else
          "crossover: exact was faster at every measured size")
    print(f"memory at 1M x 1024 float32: vectors {1e6 * 1024 * 4 / 2**30:.1f} GiB; hnsw graph with M=16 adds about "
          f"{1e6 * 16 * 2 * 4 / 2**30:.2f} GiB of links (level 0 holds 2M neighbours of 4 bytes)")


if __name__ == "__main__":
    main()
