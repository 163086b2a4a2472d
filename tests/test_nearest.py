"""Each vector's nearest, chosen by score whatever the products that proposed them
(curate.nearest): products a little off, cut into blocks any way, ties among copies."""

import numpy as np
import pytest

from curate.nearest import Nearest, Wanted, chosen, product_error


def exact_best(scores: np.ndarray, wanted: Wanted):
    """The reference: each row's k best scores, ties to the earlier column; past the first
    ``always``, only those from ``least`` up."""
    order = np.lexsort((np.broadcast_to(np.arange(scores.shape[1]), scores.shape), -scores), axis=1)[:, :wanted.k]
    best = np.take_along_axis(scores, order, 1)
    unwanted = (np.arange(wanted.k) >= wanted.always) & (best < wanted.least)
    return np.where(unwanted, -np.inf, best).astype(np.float32), np.where(unwanted, -1, order)


@pytest.mark.parametrize("seed, wanted", [(seed, Wanted(9)) for seed in range(6)]
                         + [(seed, Wanted(9, least=0.92, always=2)) for seed in range(6)])
def test_products_off_by_their_error_still_give_the_k_best_by_score(seed, wanted):
    """Also when only the first ``always`` are wanted whatever their score, the rest from
    ``least`` up (the report's neighbours): then few products are candidates."""
    rng = np.random.default_rng(seed)
    dim, queries, vectors = 64, 40, 700
    scores = rng.choice(np.linspace(0.2, 0.9, 60), size=(queries, vectors)).astype(np.float32)   # many ties
    scores[np.ix_(rng.choice(queries, queries // 2, replace=False), rng.choice(vectors, 30))] = 0.95   # copies: ties
    error = product_error(dim)
    products = (scores + rng.uniform(-error, error, scores.shape)).astype(np.float32)
    nearest = Nearest(queries, wanted, dim)
    cuts = np.sort(rng.choice(np.arange(1, vectors), 5, replace=False))
    for columns in np.split(np.arange(vectors), cuts):                      # blocks of any size, rows in any set
        rows = np.sort(rng.choice(queries, queries // 2, replace=False)) if seed % 2 else np.arange(queries)
        nearest.offer(rows, columns, products[np.ix_(rows, columns)], narrow=bool(seed % 3 == 0))
        if seed % 2:
            rest = np.setdiff1d(np.arange(queries), rows)
            nearest.offer(rest, columns, products[np.ix_(rest, columns)])
    got_scores, got_ids = nearest.best(lambda r, ids: scores[r, ids])
    want_scores, want_ids = exact_best(scores, wanted)
    assert np.array_equal(got_ids, want_ids) and np.array_equal(got_scores, want_scores)
    assert len(nearest.candidates()[0]) < queries * vectors // 4               # candidates, not every product
    if wanted.least > 0:
        assert (got_ids[:, 2:] == -1).any() and (got_ids[:, 2:] >= 0).any()
        assert len(nearest.candidates()[0]) < queries * 40


def test_a_vector_offered_twice_counts_once_and_short_rows_are_padded():
    nearest = Nearest(2, Wanted(3), 16, repeats=True)
    scores = np.array([[0.9, 0.8, 0.7], [0.5, 0.5, 0.1]], np.float32)
    nearest.offer(np.array([0, 1]), np.array([4, 5, 6]), scores)
    nearest.offer(np.array([0]), np.array([4]), scores[:1, :1])            # 4 again, in another partition
    lookup = {(r, i): scores[r, i - 4] for r in range(2) for i in range(4, 7)}
    sims, ids = nearest.best(lambda rows, ids: np.array([lookup[(r, i)] for r, i in zip(rows, ids)], np.float32))
    assert ids.tolist() == [[4, 5, 6], [4, 5, 6]] and sims[1].tolist() == pytest.approx([0.5, 0.5, 0.1])
    padded = chosen(np.array([0]), np.array([3]), np.array([0.4], np.float32), 2, Wanted(2))
    assert padded[1].tolist() == [[3, -1], [-1, -1]] and np.isneginf(padded[0][1]).all()
