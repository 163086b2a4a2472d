"""The indexes and the keep/remove walk, checked against brute force."""

import os
import subprocess
import sys

import numpy as np
import pytest

import curate

from curate.registry import get_registry
from curate.similarity import IndexKind, SimilarityIndex, keep_or_remove, nearest_neighbours


def kind(name):
    return get_registry().get("index", name)


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n_clusters=60, per_cluster=8, dim=64, noise=0.08, seed=0):
    """Vectors in tight clusters (near-duplicates) among unrelated ones, shuffled."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(n_clusters, dim)))
    members = centres.repeat(per_cluster, 0) + noise * rng.normal(size=(n_clusters * per_cluster, dim)) / np.sqrt(dim)
    loners = rng.normal(size=(n_clusters * 2, dim))
    vectors = unit(np.concatenate([members, loners]))
    return vectors[rng.permutation(len(vectors))]


@pytest.mark.parametrize("threshold", [0.8, 0.9, 0.95])
@pytest.mark.parametrize("block", [7, 1024])
def test_exact_walk_invariants(threshold, block):
    vectors = clustered()
    walk = keep_or_remove(vectors, kind("exact"), threshold, block=block)
    kept = np.flatnonzero(walk.kept)
    sims = vectors @ vectors.T
    # no two kept images reach the threshold
    pair_sims = sims[np.ix_(kept, kept)] - 2 * np.eye(len(kept))
    assert pair_sims.max() < threshold
    # every removed image has an earlier kept image at >= t: the most similar kept one
    for i in np.flatnonzero(~walk.kept):
        j = walk.duplicate_of[i]
        assert walk.kept[j] and j < i
        assert walk.score[i] == pytest.approx(sims[i, j], abs=1e-5) and sims[i, j] >= threshold
        earlier_kept = kept[kept < i]
        assert sims[i, earlier_kept].max() == pytest.approx(sims[i, j], abs=1e-5)
    assert 0 < len(kept) < len(vectors)


def test_walk_keeps_first_appearance():
    a = unit(np.array([[1.0, 0.0], [0.99, 0.05], [0.0, 1.0], [1.0, 0.01]]))
    walk = keep_or_remove(a, kind("exact"), 0.9)
    assert walk.duplicate_of.tolist() == [-1, 0, -1, 0]


@pytest.mark.parametrize("threshold", [0.8, 0.9])
def test_hnsw_walk_agrees_with_exact(threshold):
    vectors = clustered(seed=1)
    exact = keep_or_remove(vectors, kind("exact"), threshold)
    hnsw = keep_or_remove(vectors, kind("hnsw"), threshold)
    assert (exact.kept == hnsw.kept).mean() >= 0.99


def test_range_search_is_not_capped_by_k():
    vectors = clustered(n_clusters=5, per_cluster=60, noise=0.05, seed=2)   # 59 neighbours each
    results = {}
    for name in ("exact", "hnsw"):
        index = kind(name).new(vectors.shape[1], len(vectors))
        index.add(vectors)
        rows, ids, sims = index.range_search(vectors, 0.9)
        results[name] = {(int(r), int(i)) for r, i in zip(rows, ids) if r != i}
        assert np.all(sims >= 0.9)
    exact, hnsw = results["exact"], results["hnsw"]
    assert len(exact) >= 5 * 60 * 50
    assert len(exact & hnsw) / len(exact) >= 0.99


def test_exact_search_matches_brute_force():
    vectors = clustered(seed=3)
    index = kind("exact").new(vectors.shape[1], 10)   # grows past its capacity
    index.add(vectors[:100])
    index.add(vectors[100:])
    sims, ids = index.search(vectors[:50], 5)
    brute = vectors[:50] @ vectors.T
    assert np.allclose(sims, -np.sort(-brute, axis=1)[:, :5], atol=1e-5)


def test_nearest_neighbour_similarity():
    a = unit(np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]))
    nn = nearest_neighbours(a, kind("exact"), 1)[0][:, 0]
    assert nn == pytest.approx([0.8, 0.8, 0.6], abs=1e-5)
    assert np.isneginf(nearest_neighbours(a[:1], kind("exact"), 1)[0][0, 0])    # alone: no neighbour


def partitioned(dim, capacity, **options):
    """A partitioned index that partitions from 200 vectors on (the default waits for 20,000)."""
    from curate.plugins.indexes import PartitionedIndex
    return PartitionedIndex(dim, capacity, train_at=200, **options)


def self_pairs(index, vectors, threshold):
    index.add(vectors)
    rows, ids, _ = index.range_search(vectors, threshold)
    keep = rows != ids
    return set(zip(np.minimum(rows, ids)[keep].tolist(), np.maximum(rows, ids)[keep].tolist()))


def test_partitioned_finds_exact_pairs_across_partitions():
    vectors = clustered(n_clusters=100, noise=0.4, seed=4)         # pairs at about 0.8-0.9
    exact = self_pairs(kind("exact").new(64, len(vectors)), vectors, 0.8)
    index = partitioned(64, len(vectors), partitions=16, probe=4, products="float32")
    found = self_pairs(index, vectors, 0.8)
    # partitions chosen by bf16 products (ranks rounded to 8 bits: near-ties fall either way) find
    # nearly all of them; which ones is a choice, measured at scale in bench/index_scale.py
    bf16 = self_pairs(partitioned(64, len(vectors), partitions=16, probe=4, products="bfloat16"), vectors, 0.8)
    assert len(bf16 & exact) >= 0.995 * len(exact) and bf16 <= exact
    homes = np.zeros(len(vectors), np.int64)
    for p in range(index.partitions):
        homes[index.members[p][:index.counts[p]]] = p
    across = {(i, j) for i, j in exact if homes[i] != homes[j]}
    assert len(exact) > 2000 and len(across) > 100
    assert found == exact
    # searching only the home partition misses the pairs across a boundary
    alone = self_pairs(partitioned(64, len(vectors), partitions=16, probe=1, products="float32"), vectors, 0.8)
    assert alone < exact and not (across & alone)


def test_partitioned_top_k_is_the_same_searched_a_part_at_a_time(monkeypatch):
    """Neighbour search holds candidates for SEARCH_QUERIES queries at a time, not for all."""
    from curate.plugins import indexes
    vectors = clustered(n_clusters=100, noise=0.4, seed=6)
    index = partitioned(64, len(vectors), partitions=16, probe=8)
    index.add(vectors)
    whole = index.search(vectors, 5)
    monkeypatch.setattr(indexes, "SEARCH_QUERIES", 7)
    parts = index.search(vectors, 5)
    assert np.array_equal(parts[1], whole[1]) and np.allclose(parts[0], whole[0], rtol=0, atol=1e-6)
    empty_sims, empty_ids = index.search(vectors[:0], 5)
    assert empty_sims.shape == empty_ids.shape == (0, 5)


def test_partitioned_search_and_walk_match_exact():
    vectors = clustered(n_clusters=100, noise=0.4, seed=5)
    index = partitioned(64, 10, partitions=16, probe=8)              # grows past its capacity
    index.add(vectors[:300])
    index.add(vectors[300:])
    sims, ids = index.search(vectors[:100], 5)
    best = -np.sort(-(vectors[:100] @ vectors.T), axis=1)[:, :5]
    near = best >= 0.8                       # neighbours this close are found; far ones may not be
    assert near[:, 1].sum() > 50
    assert np.allclose(sims[near], best[near], atol=1e-5)
    assert (ids[:, 0] == np.arange(100)).all()
    options = {"partitions": 16, "probe": 8}
    for threshold in (0.8, 0.9):
        exact = keep_or_remove(vectors, kind("exact"), threshold, block=64)
        split = keep_or_remove(vectors, kind("partitioned"), threshold, block=64, **options)
        assert (split.duplicate_of == exact.duplicate_of).all()


def at_threshold_pairs(threshold, pairs=150, loners=300, dim=128, seed=8):
    """Pairs planted at ``threshold`` + and - 1e-4 (alternately) among unrelated vectors."""
    rng = np.random.default_rng(seed)
    first = unit(rng.normal(size=(pairs, dim)))
    other = rng.normal(size=(pairs, dim))
    other = unit(other - (other * first).sum(1, keepdims=True) * first)        # orthogonal to first
    cos = threshold + np.where(np.arange(pairs) % 2, -1e-4, 1e-4)[:, None]
    second = unit(cos * first + np.sqrt(1 - cos ** 2) * other)
    vectors = np.concatenate([first, second, unit(rng.normal(size=(loners, dim)))])
    return vectors[rng.permutation(len(vectors))]


def found_pairs(index, vectors, threshold):
    """{(row, id): similarity} of the index's range search, self pairs left out."""
    index.add(vectors)
    rows, ids, sims = index.range_search(vectors, threshold)
    return {(r, i): s for r, i, s in zip(rows.tolist(), ids.tolist(), sims.tolist()) if r != i}


@pytest.mark.parametrize("products", ["bfloat16", "float16"])
@pytest.mark.parametrize("threshold", [0.8, 0.95])
def test_rounded_partitions_report_exact_pairs_at_the_threshold(threshold, products):
    torch = pytest.importorskip("torch")
    vectors = at_threshold_pairs(threshold)
    exact = found_pairs(kind("exact").new(vectors.shape[1], len(vectors)), vectors, threshold)
    index = partitioned(vectors.shape[1], len(vectors), partitions=8, probe=8, products=products)
    split = found_pairs(index, vectors, threshold)
    assert type(index.products).__name__ == {"bfloat16": "Bfloat16Products", "float16": "Float16Products"}[products]
    assert len(exact) == 2 * 75                                # the pairs at + 1e-4, from both sides
    assert split.keys() == exact.keys()
    assert np.allclose([split[p] for p in exact], [exact[p] for p in exact], rtol=0, atol=1e-6)   # float32 sums, in another order
    # the rounded products are off these similarities: only the float32 rescoring gets them right
    rows, ids = np.array(list(exact)).T
    if products == "bfloat16":
        coarse = (torch.from_numpy(vectors[rows]).bfloat16() * torch.from_numpy(vectors[ids]).bfloat16()).float().sum(1)
        off = np.abs(coarse.numpy() - np.array(list(exact.values()))) > 1e-4
    else:
        coarse = (vectors[rows] * vectors[ids].astype(np.float16).astype(np.float32)).sum(1)
        off = np.abs(coarse - np.array(list(exact.values()))) > 1e-5
    assert off.mean() > 0.5


def test_bfloat16_margin_bounds_the_products_error():
    torch = pytest.importorskip("torch")
    from curate.plugins.indexes import bfloat16_margin
    rng = np.random.default_rng(9)
    base = unit(rng.normal(size=(500, 768)))
    near = unit(base + rng.uniform(0.05, 1.0, (500, 1)) * rng.normal(size=(500, 768)) / np.sqrt(768))
    vectors = np.concatenate([base, near, unit(np.abs(rng.normal(size=(500, 768))))])   # all similarities
    exact = vectors @ vectors.T
    coarse = (torch.from_numpy(vectors).bfloat16() @ torch.from_numpy(vectors).bfloat16().T).float().numpy()
    error = np.abs(coarse - exact).max()
    assert 0.001 < error <= bfloat16_margin(768) / 1.25
    # float16: only the stored side is rounded, queries stay float32
    from curate.plugins.products import float16_margin
    coarse = vectors.astype(np.float32) @ vectors.astype(np.float16).astype(np.float32).T
    assert 1e-5 < np.abs(coarse - exact).max() <= float16_margin(768) / 1.25 < bfloat16_margin(768) / 10


@pytest.mark.parametrize("products", ["float32", "float16", "bfloat16"])
def test_partitions_find_every_pair_their_probes_reach(products):
    """Whichever products choose the partitions and compare within them (bf16: candidates at the
    lowered threshold, rescored), the pairs found are exactly exact's pairs (query, other) whose
    query probes the other's partition."""
    pytest.importorskip("torch")
    vectors = clustered(n_clusters=100, noise=0.4, seed=4)
    exact = found_pairs(kind("exact").new(64, len(vectors)), vectors, 0.8)
    index = partitioned(64, len(vectors), partitions=16, probe=2, products=products)
    found = found_pairs(index, vectors, 0.8)
    homes = np.zeros(len(vectors), np.int64)
    for p in range(index.partitions):
        homes[index.members[p][:index.counts[p]]] = p
    probes = index.centroids.nearest(vectors, 2, index.products)
    reached = {(i, j) for i, j in exact if homes[j] in probes[i]}         # query i, the other in its probes
    assert found.keys() == reached
    assert 0.5 < len(found) / len(exact) < 0.99      # probe 2 of 16: a real share is missed


def test_float16_partitions_hold_half_the_memory_and_find_float32s_pairs():
    """float16 storage changes neither the partitions (centroids compared in float32) nor the
    pairs: the same pairs and similarities as float32's, from half the stored bytes."""
    vectors = clustered(n_clusters=100, noise=0.4, seed=4)
    single = found_pairs(partitioned(64, len(vectors), partitions=16, probe=4, products="float32"), vectors, 0.8)
    index = partitioned(64, len(vectors), partitions=16, probe=4, products="float16")
    half = found_pairs(index, vectors, 0.8)
    assert half.keys() == single.keys() and len(half) > 2000
    assert np.allclose([half[p] for p in single], list(single.values()), rtol=0, atol=1e-6)
    assert {d.dtype for d in index.data} == {np.dtype(np.float16)}
    assert sum(d.nbytes for d in index.data) == vectors.nbytes // 2
    index.add(vectors[:200])                                 # adds after training grow float16 partitions
    assert {d.dtype for d in index.data} == {np.dtype(np.float16)}


def test_default_partitions_balance_the_centroids_against_the_search():
    """About 250 vectors a partition up to 2M vectors at probe 32; above, sqrt(probe x n)."""
    from curate.plugins.indexes import default_partitions
    assert default_partitions(200_000) == 800 and default_partitions(1_000_000) == 4_000
    assert default_partitions(10_000_000) == 17_888
    assert default_partitions(10_000_000, probe=8) == 8_944
    assert default_partitions(100) == 1


def test_a_larger_probe_keeps_the_default_partitions():
    """The probe buys recall for search time in proportion (bench/probe_recall.py at 10M): it
    does not also change how many partitions there are, unless they are given."""
    from curate.plugins.indexes import PartitionedIndex
    assert PartitionedIndex(8, 10_000_000, probe=80).partitions == 17_888
    assert PartitionedIndex(8, 10_000_000, probe=80).probe == 80
    assert PartitionedIndex(8, 1_000_000, probe=8).partitions == 4_000
    assert PartitionedIndex(8, 1_000_000, partitions=100, probe=8).partitions == 100


def test_partitions_filed_on_training_are_views_that_grow_on_adds():
    """On training every vector is stored partition after partition in one array; vectors added
    later go to their partitions without disturbing the others: the same pairs as one add."""
    vectors = clustered(n_clusters=100, noise=0.4, seed=4)
    once = found_pairs(partitioned(64, len(vectors), partitions=16, probe=16), vectors, 0.8)
    index = partitioned(64, len(vectors), partitions=16, probe=16)
    index.add(vectors[:600])
    index.ready()
    index.add(vectors[600:])
    rows, ids, sims = index.range_search(vectors, 0.8)
    assert {(r, i) for r, i in zip(rows.tolist(), ids.tolist()) if r != i} == once.keys()
    members = np.sort(np.concatenate([index.members[p][:index.counts[p]] for p in range(16)]))
    assert (members == np.arange(len(vectors))).all()


def test_adds_a_block_at_a_time_grow_the_probes_by_doubling():
    """The walk adds a block at a time: each vector's probes are noted in an array that doubles,
    not one copied whole at every add, and the walk's answers are the same as one add's."""
    vectors = clustered(n_clusters=100, noise=0.4, seed=4)
    once = found_pairs(partitioned(64, len(vectors), partitions=16, probe=16), vectors, 0.8)
    index = partitioned(64, len(vectors), partitions=16, probe=16)
    index.add(vectors[:600])
    index.ready()
    sizes = set()
    for start in range(600, len(vectors), 7):
        index.add(vectors[start:start + 7])
        sizes.add(len(index.probes))
    assert len(sizes) <= 3 and len(index.probes) < 2 * len(index)
    assert (index.probes[:len(index)] == index.centroids.nearest(vectors, 16, index.products)).all()
    rows, ids, sims = index.range_search(vectors, 0.8)
    assert {(r, i) for r, i in zip(rows.tolist(), ids.tolist()) if r != i} == once.keys()


def test_partitioned_index_holds_the_vectors_given_without_a_copy(tmp_path):
    pytest.importorskip("torch")
    vectors = clustered(n_clusters=100, noise=0.4, seed=4)
    path = tmp_path / "vectors.f32"
    vectors.tofile(path)
    mapped = np.memmap(path, np.float32, mode="r", shape=vectors.shape)
    index = partitioned(64, len(vectors), partitions=16, probe=4, products="bfloat16")
    index.add(mapped)
    index.ready()
    assert np.shares_memory(index.vectors, mapped)                           # still the mapped file
    assert sum(d.element_size() * d.numel() for d in index.data) == vectors.nbytes // 2   # bf16: half
    # the same pairs as from memory (with the same products: bf16's near-ties pick other probes)
    expected = found_pairs(partitioned(64, len(vectors), partitions=16, probe=4, products="bfloat16"), vectors, 0.8)
    assert {(r, i) for r, i, _ in zip(*index.range_search(mapped, 0.8)) if r != i} == expected.keys()
    # a later add copies into an array of the index's own; the file is not written
    index.add(vectors[:10])
    assert len(index) == len(vectors) + 10 and not np.shares_memory(index.vectors, mapped)
    assert (np.fromfile(path, np.float32).reshape(vectors.shape) == vectors).all()
    rows, ids, _ = index.range_search(vectors[:10], 0.999)
    assert {len(vectors) + r for r in range(10)} <= set(ids[rows == np.arange(10)[rows]].tolist())


def test_auto_is_exact_for_small_groups_and_partitioned_above():
    from curate.plugins.indexes import AUTO_EXACT_MAX, ExactIndex, PartitionedIndex, TorchExactIndex
    assert isinstance(kind("auto").new(4, AUTO_EXACT_MAX), (ExactIndex, TorchExactIndex))
    large = kind("auto").new(4, AUTO_EXACT_MAX + 1, m=16, ef=32)       # hnsw's options are ignored
    assert isinstance(large, PartitionedIndex) or isinstance(large, TorchExactIndex)


def dense_walk(matrices, thresholds, verified, verify, k):
    """The walk as a reference, from full similarity matrices: for each image in order, each
    channel's kept earlier images at >= its threshold, most similar first (then earliest)."""
    n = len(matrices[0])
    duplicate_of, signal, refused = [-1] * n, [-1] * n, []
    for i in range(n):
        matches = []
        for c, (sims, t) in enumerate(zip(matrices, thresholds)):
            kept = [j for j in range(i) if duplicate_of[j] < 0 and sims[i, j] >= t]
            matches += [(c, j) for j in sorted(kept, key=lambda j: (-sims[i, j], j))[:k]]
        free = [(c, j) for c, j in matches if verify is None or not verified[c]]
        if free:
            duplicate_of[i], signal[i] = free[0][1], free[0][0]
            continue
        tried, best, first_refused = [], None, None
        for c, j in matches:
            if j in tried or len(tried) >= k:
                continue
            tried.append(j)
            verdict = verify(j, i)
            if verdict.same and (best is None or verdict.score < best[2].score):
                best = (c, j, verdict)
            elif not verdict.same and first_refused is None:
                first_refused = (j, i)
        if best:
            duplicate_of[i], signal[i] = best[1], best[0]
        elif first_refused:
            refused.append(first_refused)
    return duplicate_of, signal, refused


@pytest.mark.parametrize("block", [7, 4096])
@pytest.mark.parametrize("verifying", [False, True])
def test_the_walk_over_pairs_decides_as_the_dense_walk(block, verifying):
    import curate
    from curate.similarity import Channel, walk
    embedding = clustered(n_clusters=40, noise=0.3, seed=6)
    coarse = unit(np.round(embedding * 4))                # a second signal: a coarser look at the same vectors
    thresholds, verified = (0.8, 0.95), (True, False)

    def verify(kept, candidate):                          # refuses some pairs, scores the rest by distance
        return curate.Verdict((kept + candidate) % 3 != 0, abs(kept - candidate) % 5, "test")

    verify = verify if verifying else None
    found = walk([Channel("embedding", embedding, 0.8, kind("exact")),
                  Channel("coarse", coarse, 0.95, kind("exact"), verified=False)], block=block, verify=verify)
    expected, signal, refused = dense_walk([embedding @ embedding.T, coarse @ coarse.T], thresholds, verified,
                                           verify, 8 if verifying else 1)
    assert found.duplicate_of.tolist() == expected and found.signal.tolist() == signal
    assert [(kept, candidate) for kept, candidate, *_ in found.refused] == refused
    assert (found.duplicate_of >= 0).sum() > 50 and (not verifying or len(refused) > 5)


class ForwardOnly(SimilarityIndex):
    """The exact index that meets each pair only from its earlier vector's side."""

    def __init__(self, dim, capacity):
        self.exact = kind("exact").new(dim, capacity)

    def add(self, vectors):
        self.exact.add(vectors)

    def search(self, queries, k):
        return self.exact.search(queries, k)

    def range_search(self, queries, threshold):
        return self.exact.range_search(queries, threshold)

    def block_pairs(self, queries, first, threshold, alive=None):
        rows, ids, sims = self.range_search(queries, threshold)
        later = ids > rows + first
        return rows[later], ids[later], sims[later]

    def __len__(self):
        return len(self.exact)


def test_the_walk_takes_pairs_met_from_the_earlier_side():
    class Forward(IndexKind):
        name = "forward"

        def new(self, dim, capacity, **options):
            return ForwardOnly(dim, capacity)

    vectors = clustered(seed=7)
    for threshold in (0.8, 0.9):
        exact = keep_or_remove(vectors, kind("exact"), threshold, block=16)
        forward = keep_or_remove(vectors, Forward(), threshold, block=16)
        assert forward.duplicate_of.tolist() == exact.duplicate_of.tolist()
        assert (exact.duplicate_of >= 0).sum() > 50


def test_fixed_images_are_kept_and_win_over_other_kept_images():
    from curate.similarity import Channel, walk

    def at(degrees):
        return [np.cos(np.radians(degrees)), np.sin(np.radians(degrees))]

    # evaluation images e1 (0 degrees) and e2 (-10: 0.985 to e1); training k (40), t (22: 0.927 to
    # e1, 0.951 to k) and t2 (-30: 0.94 to e2 alone); threshold 0.9
    vectors = np.array([at(0), at(-10), at(40), at(22), at(-30)], np.float32)
    channel = [Channel("embedding", vectors, 0.9, kind("exact"))]
    assert walk(channel).duplicate_of.tolist() == [-1, 0, -1, 2, -1]      # plain: e2 goes, t is k's copy
    fixed = walk(channel, fixed=2)
    assert fixed.duplicate_of.tolist() == [-1, -1, -1, 0, 1]              # both stay, and win over k
    refusing = walk(channel, fixed=2, verify=lambda kept, candidate: curate.Verdict(kept >= 2, 0.0, "test"))
    assert refusing.duplicate_of.tolist() == [-1, -1, -1, 2, -1]          # refused with both: the training copy


@pytest.mark.parametrize("name", ["exact", "partitioned"])
def test_copies_of_one_picture_pair_with_its_kept_copy_not_with_each_other(name):
    from curate.similarity import Channel, Pairs, walk
    vectors = np.tile(unit(np.ones((1, 16))), (3000, 1))
    handed = []

    class Counting(Pairs):
        def search(self, start, stop, alive):
            found = super().search(start, stop, alive)
            handed.append(len(found[0]))
            return found

    result = walk([Channel("embedding", vectors, 0.9, kind(name))], block=256, pairs=Counting)
    assert result.duplicate_of.tolist() == [-1] + [0] * 2999
    # each block's pairs within itself and with the one kept copy: 12 x (256 x 255 / 2 + 256), not 3000 x 2999 / 2
    assert sum(handed) <= 12 * (256 * 255 // 2 + 256)


class Sloppy(SimilarityIndex):
    """The exact index with arithmetic of its own: every similarity it reports is 1e-6 low (as
    a float32 product blocked another way, or on another thread count, may be)."""

    def __init__(self, dim, capacity):
        self.exact = kind("exact").new(dim, capacity)

    def add(self, vectors):
        self.exact.add(vectors)

    def search(self, queries, k):
        sims, ids = self.exact.search(queries, k)
        return sims - 1e-6, ids

    def range_search(self, queries, threshold):
        rows, ids, sims = self.exact.range_search(queries, threshold - 1)
        keep = sims - 1e-6 >= threshold
        return rows[keep], ids[keep], sims[keep] - 1e-6

    def __len__(self):
        return len(self.exact)


def test_a_pairs_similarity_is_the_same_whichever_index_found_it():
    """The walk rescores every pair an index proposes with one function (float32 products summed
    in float64), asking the index for a slightly lower threshold: a pair exactly at the
    threshold is removed whatever the index's own rounding, and scores agree to the bit."""
    from curate.similarity import similarities, walk, Channel

    class SloppyKind(IndexKind):
        name = "sloppy"

        def new(self, dim, capacity, **options):
            return Sloppy(dim, capacity)

    vectors = clustered(noise=0.3, seed=3)
    first, second = 0, int(np.argmax(vectors[1:] @ vectors[0])) + 1
    at = float(similarities(vectors[[first]], vectors[[second]])[0])     # a pair exactly at the threshold
    results = [walk([Channel("embedding", vectors, at, index_kind)], block=block)
               for index_kind in (kind("exact"), SloppyKind()) for block in (7, 1024)]
    for result in results[1:]:
        assert result.duplicate_of.tolist() == results[0].duplicate_of.tolist()
        assert result.score.tolist() == results[0].score.tolist()
    removed = np.flatnonzero(results[0].duplicate_of >= 0)
    kept_of = results[0].duplicate_of[removed]
    assert results[0].score[removed].tolist() == similarities(vectors[removed], vectors[kept_of]).tolist()
    assert results[0].duplicate_of[max(first, second)] >= 0 or results[0].duplicate_of[min(first, second)] >= 0


class Blockwise(IndexKind):
    """The partitioned index asked block by block: it never searches ahead."""
    name = "blockwise"

    def new(self, dim, capacity, **options):
        index = partitioned(dim, capacity, partitions=16, probe=4)
        index.span_pairs = lambda *args, **kwargs: None
        return index


@pytest.mark.parametrize("limit", [1 << 24, 300])
def test_the_walk_searching_ahead_decides_as_block_by_block(monkeypatch, limit):
    """A partitioned index is asked for a span of blocks at once (its products are cheaper in
    larger batches); pairs of images past the block wait their turn, and a span whose pairs pass
    the limit is asked block by block instead: decisions and scores as block by block."""
    import curate.similarity as similarity
    from curate.similarity import Channel, walk
    monkeypatch.setattr(similarity, "SPAN", 512)
    monkeypatch.setattr(similarity, "SPAN_PAIRS", limit)
    vectors = clustered(n_clusters=150, noise=0.4, seed=7)
    spans = []

    class Spanning(IndexKind):
        name = "spanning"

        def new(self, dim, capacity, **options):
            index = partitioned(dim, capacity, partitions=16, probe=4)
            span_pairs = index.span_pairs

            def counted(queries, *args, **kwargs):
                found = span_pairs(queries, *args, **kwargs)
                spans.append(found is not None)
                return found
            index.span_pairs = counted
            return index

    ahead = walk([Channel("embedding", vectors, 0.85, Spanning())], block=64)
    blockwise = walk([Channel("embedding", vectors, 0.85, Blockwise())], block=64)
    assert ahead.duplicate_of.tolist() == blockwise.duplicate_of.tolist()
    assert ahead.score.tolist() == blockwise.score.tolist()
    assert (ahead.duplicate_of >= 0).sum() > 100
    assert len(spans) >= 2 and (all(spans) if limit > 1000 else not any(spans))


def test_a_self_join_takes_the_probes_found_on_filing():
    """Searching the vectors held (the walk's blocks, range_search over the same array) takes each
    vector's probes from when it was filed instead of comparing it with the centroids again: the
    same pairs as the same vectors given as other queries (a copy)."""
    vectors = clustered(n_clusters=100, noise=0.4, seed=8)
    index = partitioned(64, len(vectors), partitions=16, probe=4)
    index.add(vectors)
    compared = []
    from curate.plugins.centroids import Centroids
    real = Centroids.nearest_each

    def counted(self, queries, *args, **kwargs):
        compared.append(len(queries))
        return real(self, queries, *args, **kwargs)

    rows, ids, sims = index.range_search(index.vectors, 0.8)          # trains, files, then the self-join
    Centroids.nearest_each = counted
    try:
        filed = len(compared)
        own = sorted(zip(rows.tolist(), ids.tolist(), sims.tolist()))
        rows, ids, sims = index.range_search(index.vectors, 0.8)
        assert len(compared) == filed                                  # no comparison with the centroids
        other = index.range_search(vectors.copy(), 0.8)
        assert len(compared) > filed                                   # a copy is compared
    finally:
        Centroids.nearest_each = real
    assert own == sorted(zip(rows.tolist(), ids.tolist(), sims.tolist()))
    assert own == sorted(zip(*(a.tolist() for a in other)))
    assert len(own) > 2000


def test_float16_partitions_keep_float32s_decisions_past_the_training_size():
    """The walk over 21,300 vectors (past the 20,000 a partitioned index trains at): the same
    removals and scores with float16 partitions as with float32's."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2600, 32))
    vectors = np.concatenate([centres.repeat(8, 0) + 0.15 * rng.normal(size=(20800, 32)), rng.normal(size=(500, 32))])
    vectors = unit(vectors).astype(np.float32)[rng.permutation(21300)]
    options = {"partitions": 40, "partition_probe": 4}
    single = keep_or_remove(vectors, kind("partitioned"), 0.9, partition_products="float32", **options)
    half = keep_or_remove(vectors, kind("partitioned"), 0.9, partition_products="float16", **options)
    assert (single.duplicate_of >= 0).sum() > 10000
    assert half.duplicate_of.tolist() == single.duplicate_of.tolist() and half.score.tolist() == single.score.tolist()


@pytest.mark.parametrize("given, kept", [(None, "64"), ("7", "7")])
def test_bf16_products_bound_onednns_cache_of_compiled_products_unless_the_user_set_it(given, kept):
    """oneDNN keeps a compiled product per shape (1,024 by default, about 1 GB for the walk at
    200K vectors); the bf16 partitions bound it before their first product, a user's value stands."""
    pytest.importorskip("torch")
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    if given:
        env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = given
    code = ("import os; from curate.plugins.products import Bfloat16Products; Bfloat16Products(64); "
            "print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == kept


def test_exact_search_takes_queries_a_block_at_a_time_and_finds_each_one_s_best(monkeypatch):
    """The exact index's top-k (the report's neighbours of groups up to 100K images) goes a
    block of queries at a time, so its memory does not grow with the queries: each query
    still gets its own best, best first, across query and data blocks."""
    import curate.plugins.indexes as indexes
    monkeypatch.setattr(indexes, "_QUERY_BLOCK", 300)
    monkeypatch.setattr(indexes, "_BLOCK", 1000)
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((2500, 24)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors[[1600, 1500, 2400]] = vectors[100]          # ties, in one block and across blocks: earlier id first
    index = indexes.ExactIndex.over(vectors)
    sims, ids = index.search(vectors[:1700], 6)
    products = vectors[:1700] @ vectors.T
    best = np.argsort(-products, axis=1, kind="stable")[:, :6]
    assert np.array_equal(ids, best)
    assert np.allclose(sims, np.take_along_axis(products, best, 1), atol=1e-6)
    assert ids[100, :4].tolist() == [100, 1500, 1600, 2400]
    assert index.search(vectors[:0], 6)[1].shape == (0, 6)
