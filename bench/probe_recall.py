"""The partitioned index's recall at sizes too large to run here, for several probes and
partition counts, from the index's own centroids and a sampled truth alone.

The partitioned index finds a pair when one vector's home partition is among the other's
probed partitions (either way round: every vector is a query of the self-join), and then
scores it exactly. So its recall follows from three things only: the centroids (k-means on
the sample the index itself draws), each vector's nearest centroids, and the true pairs. This
bench computes them for the pairs of ``--queries`` sampled vectors (exact's pairs, as in
bench/index_scale.py) on the same planted vectors, without filing or searching all of them:
10M vectors take minutes here, where the index takes hours (bench/README.md, "10M on one
machine"). Checked against the index's measured recall at 1M (printed beside).

    python bench/probe_recall.py --vectors 1000000 --partitions 4000 1789 --probes 32 64
    python bench/probe_recall.py --vectors 10000000 --partitions 17888 25298 --probes 32 48 64
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table  # noqa: E402
from index_scale import THRESHOLDS, pairs_of, planted  # noqa: E402


class Tap:
    """Stands in for planted()'s output array: hands each shard to ``take`` and keeps nothing."""

    def __init__(self, take):
        self.take = take

    def __setitem__(self, span: slice, vectors: np.ndarray):
        self.take(span.start, vectors)


def rows_of(n: int, dim: int, wanted: np.ndarray) -> np.ndarray:
    """The planted vectors at the sorted positions ``wanted`` (one pass over the shards)."""
    out = np.empty((len(wanted), dim), np.float32)

    def take(start, vectors):
        lo, hi = np.searchsorted(wanted, [start, start + len(vectors)])
        out[lo:hi] = vectors[wanted[lo:hi] - start]
    planted(n, dim, out=Tap(take))
    return out


def truth_of(n: int, dim: int, queries: np.ndarray, chosen: np.ndarray):
    """Exact's pairs of the ``queries`` (positions; ``chosen``: their vectors) at the lowest
    threshold, and the vectors of every partner found: (rows, ids, sims, partner positions,
    partner vectors)."""
    rows, ids, sims, partners = [], [], [], {}

    def take(start, vectors):
        products = chosen @ vectors.T
        r, c = np.nonzero(products >= min(THRESHOLDS))
        rows.append(queries[r])
        ids.append(c + start)
        sims.append(products[r, c])
        for position, vector in zip(c + start, vectors[c]):
            partners[int(position)] = vector
    planted(n, dim, out=Tap(take))
    order = np.array(sorted(partners), np.int64)
    return (np.concatenate(rows), np.concatenate(ids), np.concatenate(sims), order,
            np.stack([partners[int(p)] for p in order]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=10_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--partitions", type=int, nargs="+", default=None,
                        help="partition counts (default: the index's own)")
    parser.add_argument("--probes", type=int, nargs="+", default=[32])
    parser.add_argument("--spills", type=int, nargs="+", default=[1])
    parser.add_argument("--queries", type=int, default=2000, help="sampled queries for exact's pairs")
    parser.add_argument("--products", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--keep", type=Path, default=None,
                        help="a folder to keep the truth and centroids in, and reuse them from (the same --vectors)")
    args = parser.parse_args()
    from curate.plugins.centroids import Centroids
    from curate.plugins.indexes import SAMPLE_PER_PARTITION, default_partitions
    from curate.plugins.products import partition_products

    n, dim = args.vectors, args.dim
    products = partition_products(dim, args.products)
    counts = args.partitions or [default_partitions(n)]
    queries = np.sort(np.random.default_rng(1).choice(n, min(args.queries, n), replace=False))   # as index_scale
    samples = {p: np.sort(np.random.default_rng(0).choice(n, min(n, SAMPLE_PER_PARTITION * p), replace=False))
               for p in counts}                                                                  # as the index's _train
    kept = args.keep / f"truth-{n}x{dim}-{args.queries}.npz" if args.keep else None
    start = time.perf_counter()
    if kept and kept.exists():
        rows, ids, sims, partners, partner_vectors = np.load(kept).values()
        held = wanted = None
    else:
        wanted = np.unique(np.concatenate([queries, *samples.values()]))
        held = rows_of(n, dim, wanted)
        rows, ids, sims, partners, partner_vectors = truth_of(n, dim, queries, held[np.searchsorted(wanted, queries)])
        if kept:
            args.keep.mkdir(parents=True, exist_ok=True)
            np.savez(kept, rows, ids, sims, partners, partner_vectors)
    print(f"{n:,} vectors: samples and truth in {time.perf_counter() - start:.0f} s "
          f"({len(rows):,} pairs of {len(queries):,} queries)", flush=True)
    truth = {t: pairs_of(rows, ids, sims, t, n) for t in THRESHOLDS}
    table = []
    for p in counts:
        start = time.perf_counter()
        saved = args.keep / f"centroids-{n}x{dim}-{p}-{products.__class__.__name__}.npy" if args.keep else None
        if saved and saved.exists():
            centroids = Centroids(np.load(saved))
        else:
            if held is None or not np.isin(samples[p], wanted).all():
                wanted = samples[p]
                held = rows_of(n, dim, wanted)
            centroids = Centroids.train(held[np.searchsorted(wanted, samples[p])], p, products)
            if saved:
                np.save(saved, centroids.array)
        trained = time.perf_counter() - start
        nearest = centroids.nearest(partner_vectors, min(p, max(args.probes) + max(args.spills)), products)
        for probe in args.probes:
            for spill in args.spills:
                recalls = [recall_of(truth[t], partners, nearest, n, min(probe, p), min(spill, p)) for t in THRESHOLDS]
                table.append([f"{n:,}", f"{p:,} ({n // p:,})", probe, spill, f"{len(samples[p]):,}",
                              f"{trained:.0f}", "/".join(f"{r:.4f}" for r in recalls),
                              f"{probe * spill * n / p / (32 * n / default_partitions(n)):.2f}"])
                print(" | ".join(map(str, table[-1])), flush=True)
    print_table(f"partitioned index's recall from its centroids ({args.queries:,} sampled queries, "
                f"{products.__class__.__name__})",
                ["vectors", "partitions (size)", "probe", "spill", "k-means sample", "k-means s", "recall 0.8/0.9",
                 "search products / default's"], table)


def recall_of(pairs: np.ndarray, partners: np.ndarray, nearest: np.ndarray, n: int, probe: int, spill: int) -> float:
    """Share of ``pairs`` (keys low * n + high) where one vector's ``spill`` homes meet the
    other's ``probe`` probed partitions, either way round."""
    low, high = np.searchsorted(partners, pairs // n), np.searchsorted(partners, pairs % n)
    homes, probes = nearest[:, :spill], nearest[:, :probe]

    def meets(a, b):          # a home of b among a's probes
        return (homes[b][:, :, None] == probes[a][:, None, :]).any(axis=(1, 2))
    return float((meets(low, high) | meets(high, low)).mean()) if len(pairs) else 1.0


if __name__ == "__main__":
    main()
