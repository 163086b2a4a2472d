"""Recall of the partitioned index for several partition counts and probes, from its partitions
alone, without searching: a pair is found when either vector's ``probe`` nearest partitions hold
the other (the bf16 candidates, with their margin, and the float32 rescoring find every pair
there). Same planted vectors and sampled exact pairs as index_scale.py, so it reproduces that
script's recall (1M, 1,000 partitions, probe 16: 0.9868 / 0.9983) in minutes of CPU.

    python bench/partition_recall.py --size 1000000 --partitions 1000 4000 --probes 16 24 32 48
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from index_scale import THRESHOLDS, planted, sampled_truth  # noqa: E402


def ranks(vectors, centroids, products) -> np.ndarray:
    """Each vector's rank of every partition (0: its nearest), as the index ranks them."""
    from curate.plugins.centroids import nearest_centroids
    nearest = nearest_centroids(vectors, centroids, len(centroids), products=products)
    out = np.empty_like(nearest)
    np.put_along_axis(out, nearest, np.arange(len(centroids))[None, :], 1)
    return out


def main() -> None:
    from curate.plugins.centroids import kmeans, nearest_centroids
    from curate.plugins.indexes import SAMPLE_PER_PARTITION, partition_products
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, nargs="+", default=[1000])
    parser.add_argument("--probes", type=int, nargs="+", default=[16, 24, 32])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--products", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                        help="how vectors are compared with the centroids (the index's own choice by default)")
    args = parser.parse_args()
    products = partition_products(768, args.products)
    n = args.size
    vectors = planted(n)
    truth, _ = sampled_truth(vectors, args.queries)
    keys = truth[min(THRESHOLDS)]
    pairs = np.stack([keys // n, keys % n], 1)
    low, high = pairs[:, 0], pairs[:, 1]
    sims = np.einsum("ij,ij->i", vectors[low], vectors[high])
    involved, index = np.unique(pairs, return_inverse=True)
    index = index.reshape(pairs.shape)
    for partitions in args.partitions:      # as PartitionedIndex._train: the same sample, the same k-means
        rng = np.random.default_rng(0)
        sample = vectors[np.sort(rng.choice(n, min(n, SAMPLE_PER_PARTITION * partitions), replace=False))]
        centroids = kmeans(sample, partitions, products=products)
        homes = np.concatenate([nearest_centroids(vectors[s:s + 16384], centroids, 1, products=products)[:, 0]
                                for s in range(0, n, 16384)])
        rank = ranks(vectors[involved], centroids, products)
        to_high, to_low = rank[index[:, 0], homes[high]], rank[index[:, 1], homes[low]]
        for probe in args.probes:
            found = (to_high < probe) | (to_low < probe)
            print(f"{n:,} vectors, {partitions:,} partitions, probe {probe}: recall "
                  + " / ".join(f"{found[sims >= t].mean():.4f}" for t in THRESHOLDS), flush=True)


if __name__ == "__main__":
    main()
