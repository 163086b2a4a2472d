"""The indexes and the keep/remove walk, checked against brute force."""

import numpy as np
import pytest

from curate.registry import get_registry
from curate.similarity import keep_or_remove, nearest_neighbours


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
