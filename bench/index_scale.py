"""Index: every pair at similarity >= 0.8 (and >= 0.9) among 768-d vectors with planted
near-duplicate clusters, each index kind against exact, at several sizes.

    python bench/index_scale.py --sizes 100000 1000000 --exact-max 100000 --kinds partitioned hnsw

Each kind finds every pair >= 0.8 once (the pairs >= 0.9 are among them); its wall time
covers building the index and the search. Recall: the share of exact's pairs that a kind
finds, exact's pairs taken from a random sample of --queries query vectors against all
vectors (a pair counts as found in either direction). Exact's full search runs up to
--exact-max vectors; above it its time is projected from the sample (n / queries times the
sample's time, the same blocked products).

    python bench/index_scale.py --sizes 1000000 --kinds partitioned --probes 16 24 --memmap /tmp

Per run also its CPU seconds (every thread's), its peak RSS and its peak anonymous RSS (what
it allocated: with --memmap the vectors are a float32 file mapped read-only, as the cache
holds them, and their pages are not anonymous). --products float32 bfloat16 runs the
partitioned index both ways in one run (default: its own choice).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import MemoryWatch, print_table  # noqa: E402

THRESHOLDS = (0.8, 0.9)
PLANT_SHARD = 65536
TRUTH_ROWS = 65536


def planted(n: int, dim: int = 768, seed: int = 0, out: np.ndarray | None = None) -> np.ndarray:
    """Unrelated unit vectors plus clusters of 2-10 near-duplicates (similarity about 0.8-0.99)
    covering 30% of them, a cluster's members at random positions. Made a shard at a time into
    ``out`` (a float32 file mapped writable: never all in memory; default a new array): a
    row's vector depends on ``seed`` and its position only."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 11, size=n // 2 + 1)
    clusters = int(np.searchsorted(np.cumsum(sizes), 0.3 * n)) + 1          # the last one passes 30%
    sizes = sizes[:clusters]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    noise = rng.uniform(0.1, 0.7, size=clusters).astype(np.float32)
    bases = rng.standard_normal(size=(clusters, dim), dtype=np.float32)
    slots = rng.permutation(n)[:min(n, int(sizes.sum()))]                 # clustered rows' positions
    cluster_of = np.full(n, -1, np.int32)
    cluster_of[slots] = np.repeat(np.arange(clusters, dtype=np.int32), sizes)[:len(slots)]
    is_base = np.zeros(n, bool)
    is_base[slots[starts[starts < len(slots)]]] = True
    out = np.empty((n, dim), np.float32) if out is None else out
    for number, start in enumerate(range(0, n, PLANT_SHARD)):
        stop = min(n, start + PLANT_SHARD)
        vectors = np.random.default_rng([seed, number]).standard_normal(size=(stop - start, dim), dtype=np.float32)
        cluster, base = cluster_of[start:stop], is_base[start:stop]
        member = (cluster >= 0) & ~base
        vectors[member] = bases[cluster[member]] + noise[cluster[member], None] * vectors[member]
        vectors[base] = bases[cluster[base]]
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        out[start:stop] = vectors
    return out


def pairs_of(rows, ids, sims, threshold, n: int) -> np.ndarray:
    """Pairs at >= ``threshold``, whichever direction found them: sorted unique keys
    smaller * n + larger position (arrays, not sets of tuples: 7M pairs at 10M vectors)."""
    keep = (sims >= threshold) & (rows != ids)
    low, high = np.minimum(rows[keep], ids[keep]), np.maximum(rows[keep], ids[keep])
    return np.unique(low.astype(np.int64) * n + high)


def all_pairs(kind, vectors, threshold, **options):
    """Every pair >= ``threshold`` (rows, ids, similarities) and the :class:`MemoryWatch` of
    building the index and searching it."""
    with MemoryWatch() as watch:
        index = kind.new(vectors.shape[1], len(vectors), **options)
        index.add(vectors)
        found = index.range_search(vectors, threshold)
        del index
    return found, watch


def mapped(n: int, dim: int, folder: str) -> tuple[np.ndarray, Path]:
    """:func:`planted` vectors made into a float32 file in ``folder`` a shard at a time and
    mapped read-only (as the cache holds them)."""
    path = Path(folder) / f"index_scale-{n}x{dim}.f32"
    planted(n, dim, out=np.memmap(path, np.float32, mode="w+", shape=(n, dim))).flush()
    return np.memmap(path, np.float32, mode="r", shape=(n, dim)), path


def faiss_pairs(vectors, threshold, partitions: int, probe: int = 16):
    """faiss's IndexIVFFlat (inner product, spherical k-means of 20 iterations on 64 vectors per
    partition) asked for every pair >= ``threshold``: the library alternative to ``partitioned``."""
    import faiss
    with MemoryWatch() as watch:
        found = _faiss_range_search(faiss, vectors, threshold, partitions, probe)
    return found, watch


def _faiss_range_search(faiss, vectors, threshold, partitions, probe):
    dim = vectors.shape[1]
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, partitions, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter, index.cp.spherical, index.cp.max_points_per_centroid = 20, True, 64
    index.train(vectors)
    index.add(vectors)
    index.nprobe = probe
    limits, sims, ids = index.range_search(vectors, threshold - 1e-6)   # faiss keeps similarities > radius
    rows = np.repeat(np.arange(len(vectors)), np.diff(limits.astype(np.int64)))
    return rows, ids.astype(np.int64), sims


def sampled_truth(vectors, queries: int, seed: int = 1):
    """Exact's pairs for a random sample of query vectors: {threshold: pairs}, and the sample's
    seconds (the vectors read once, in order, TRUTH_ROWS at a time)."""
    n = len(vectors)
    sample = np.sort(np.random.default_rng(seed).choice(n, min(queries, n), replace=False))
    start = time.perf_counter()
    chosen = np.asarray(vectors[sample], np.float32)
    rows, ids, sims = [], [], []
    for first in range(0, n, TRUTH_ROWS):
        block = np.asarray(vectors[first:first + TRUTH_ROWS], np.float32)
        products = chosen @ block.T
        r, c = np.nonzero(products >= min(THRESHOLDS))
        rows.append(sample[r])
        ids.append(c + first)
        sims.append(products[r, c])
    seconds = time.perf_counter() - start
    rows, ids, sims = np.concatenate(rows), np.concatenate(ids), np.concatenate(sims)
    return {t: pairs_of(rows, ids, sims, t, n) for t in THRESHOLDS}, seconds


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.isin(truth, found).sum()) / max(1, len(truth))


def runs(args) -> list[tuple[str, str, dict]]:
    """(label, index kind, options) of each index run: partitioned once per probe and products."""
    out = []
    for name in args.kinds:
        if name != "partitioned":
            out.append((name, name, {}))
            continue
        for probe in args.probes or [None]:
            for products in args.products or [None]:
                options = {"partitions": args.partitions} if args.partitions else {}
                label = name
                if probe:
                    options["partition_probe"], label = probe, f"{label} probe {probe}"
                if products:
                    options["partition_products"], label = products, f"{label} {products}"
                out.append((label, name, options))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--exact-max", type=int, default=100_000, help="largest size to run exact on in full")
    parser.add_argument("--kinds", nargs="+", default=["partitioned", "hnsw"],
                        help="index kinds, and faiss-ivf for faiss's IndexIVFFlat (pip install faiss-cpu)")
    parser.add_argument("--partitions", type=int, default=None,
                        help="partitions of partitioned and faiss-ivf [default: partitioned's own "
                             "(plugins/indexes.default_partitions); faiss-ivf n / 1,000]")
    parser.add_argument("--probes", type=int, nargs="+", default=None, help="partitioned's probes, one run each")
    parser.add_argument("--products", nargs="+", default=None, choices=["auto", "float32", "float16", "bfloat16"],
                        help="partitioned's products, one run each")
    parser.add_argument("--memmap", metavar="FOLDER", default=None,
                        help="write the vectors to a float32 file there and search them memory-mapped (deleted after)")
    parser.add_argument("--hnsw-max", type=int, default=200_000, help="largest size to run hnsw on")
    parser.add_argument("--queries", type=int, default=2000, help="sampled queries for exact's pairs")
    args = parser.parse_args()
    from curate.registry import get_registry
    registry = get_registry()
    rows = []
    for n in args.sizes:
        if args.memmap:
            vectors, path = mapped(n, args.dim, args.memmap)
        else:
            vectors, path = planted(n, args.dim), None
        try:
            rows += measure(args, registry, n, vectors)
        finally:
            if path:
                del vectors
                path.unlink()
    print_table(f"every pair >= 0.8 / 0.9 among {args.dim}-d planted vectors (wall s; recall of exact's pairs "
                f"from {args.queries:,} sampled queries; vectors {'memory-mapped' if args.memmap else 'in memory'})",
                ["vectors", "index", "exact pairs 0.8/0.9", "pairs 0.8/0.9", "exact s", "index s", "CPU s",
                 "exact/index", "hnsw/index", "recall 0.8/0.9", "peak RSS MB", "peak anon MB", "anon/vectors"],
                rows)


def measure(args, registry, n: int, vectors) -> list[list]:
    """The table's rows for ``n`` vectors: exact (sampled or in full), then each run."""
    truth, sample_s = sampled_truth(vectors, args.queries)
    exact_s = sample_s * n / min(args.queries, n)
    label = f"{exact_s:.0f} (projected)"
    exact_pairs = "-"
    if n <= args.exact_max:
        found, watch = all_pairs(registry.get("index", "exact"), vectors, min(THRESHOLDS))
        exact_s = watch.wall
        label = f"{exact_s:.1f}"
        full = {t: pairs_of(*found, t, n) for t in THRESHOLDS}
        exact_pairs = "/".join(f"{len(full[t]):,}" for t in THRESHOLDS)
        print(f"{n:,} exact: {watch.wall:.1f} s, CPU {watch.cpu:.1f} s, peak RSS {watch.peak_mb:,.0f} MB, "
              f"pairs {exact_pairs}", flush=True)          # as measured: a run cut short keeps it
    results = {}
    for name, kind, options in runs(args):
        if kind == "hnsw" and n > args.hnsw_max:
            continue
        if kind == "faiss-ivf":
            found, watch = faiss_pairs(vectors, min(THRESHOLDS), args.partitions or max(1, n // 1000))
        else:
            found, watch = all_pairs(registry.get("index", kind), vectors, min(THRESHOLDS), **options)
        pairs = results[name] = ({t: pairs_of(*found, t, n) for t in THRESHOLDS}, watch)
        del found
        print(f"{n:,} {name}: {watch.wall:.1f} s, CPU {watch.cpu:.1f} s, peak RSS {watch.peak_mb:,.0f} MB, "
              f"peak anon {watch.anon_mb:,.0f} MB, recall " + "/".join(f"{recall(pairs[0][t], truth[t]):.4f}"
                                                                        for t in THRESHOLDS), flush=True)
    rows = []
    vectors_mb = vectors.nbytes / 2 ** 20
    for name, (pairs, watch) in results.items():
        hnsw_s = results["hnsw"][1].wall if "hnsw" in results else None
        rows.append([f"{n:,}", name, exact_pairs, "/".join(f"{len(pairs[t]):,}" for t in THRESHOLDS), label,
                     f"{watch.wall:.1f}", f"{watch.cpu:.1f}", f"{exact_s / watch.wall:.1f}",
                     f"{hnsw_s / watch.wall:.2f}" if hnsw_s else "-",
                     "/".join(f"{recall(pairs[t], truth[t]):.4f}" for t in THRESHOLDS),
                     f"{watch.peak_mb:,.0f}", f"{watch.anon_mb:,.0f}", f"{watch.anon_mb / vectors_mb:.2f}"])
    return rows


if __name__ == "__main__":
    main()
