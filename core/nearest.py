"""Each vector's k nearest, the same whichever index, process or machine finds them.

A float32 product's last bits depend on how the products are cut and threaded (a Ray task on
one thread and the driver on two differ), so products only propose candidates: the k best are
chosen by :func:`curate.similarity.similarities` (the score every pair gets), ties to the
earlier id. A product differs from that score by at most :func:`product_error`, so a query's
candidates are every vector whose product is within twice that of the query's k-th best
product (:func:`within_band`, :func:`narrowed`): the k best by score are always among them.
"""

from __future__ import annotations

import numpy as np


def product_error(dim: int) -> float:
    """The most a float32 product of two unit vectors of ``dim`` components differs from their
    score (``dim`` x 2^-24 from its sums, twice over: as :func:`curate.similarity.search_threshold`)."""
    return 2 * dim * 2.0 ** -24


def band(dim: int) -> float:
    """How far below a query's k-th best product a candidate may lie and still be among its k
    best by score: the k-th best score is at least the k-th product less one error, and a
    candidate's product at most one error below its score."""
    return 2 * product_error(dim)


def within_band(products: np.ndarray, k: int, width: float, floor: np.ndarray | None = None):
    """(rows, columns) of a block of products that may be among each row's ``k`` best: those
    within ``width`` of the row's k-th best in the block (every column when the block has
    fewer than ``k``), or of ``floor`` (a k-th best product found before: a lower bound), the
    higher of the two."""
    rows, columns = products.shape
    cut = np.full(rows, -np.inf, np.float32) if floor is None else np.asarray(floor, np.float32).copy()
    if columns >= k:
        unknown = np.flatnonzero(np.isneginf(cut)) if floor is not None else np.arange(rows)
        if len(unknown):            # rows without a bound yet: the block's own k-th best
            kth = np.partition(products[unknown], columns - k, axis=1)[:, columns - k]
            cut[unknown] = np.maximum(cut[unknown], kth)
    return np.nonzero(products >= (cut - width)[:, None])


def narrowed(rows: np.ndarray, ids: np.ndarray, products: np.ndarray, k: int, width: float,
             repeats: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Candidates (``rows``, ``ids``, ``products``, any order) narrowed to those within ``width``
    of their row's k-th best product: (rows, ids, products, each row with a k-th best, that
    k-th best). ``repeats``: an id may come twice for a row (a vector stored in two
    partitions): counted once, with its higher product."""
    order = np.lexsort((-products, rows))
    rows, ids, products = rows[order], ids[order], products[order]
    if repeats and len(rows):
        by_pair = np.lexsort((-products, ids, rows))
        first = np.ones(len(rows), bool)
        first[1:] = (rows[by_pair][1:] != rows[by_pair][:-1]) | (ids[by_pair][1:] != ids[by_pair][:-1])
        keep = np.sort(by_pair[first])
        rows, ids, products = rows[keep], ids[keep], products[keep]
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]]) if len(rows) else np.zeros(0, np.int64)
    counts = np.diff(np.r_[starts, len(rows)])
    full = counts >= k
    kth = products[starts[full] + k - 1]
    floor = np.full(len(starts), -np.inf, np.float32)
    floor[full] = kth
    keep = products >= np.repeat(floor - width, counts)
    return rows[keep], ids[keep], products[keep], rows[starts[full]], kth


def chosen(rows: np.ndarray, ids: np.ndarray, scores: np.ndarray, queries: int, k: int):
    """Each of ``queries`` rows' ``k`` best candidates by score, ties to the earlier id:
    (scores, ids), each (queries, k), padded with -inf and -1. An id given twice for a row
    counts once (its scores are equal: the same two vectors)."""
    out_scores = np.full((queries, k), -np.inf, np.float32)
    out_ids = np.full((queries, k), -1, np.int64)
    order = np.lexsort((ids, -scores, rows))
    rows, ids, scores = rows[order], ids[order], scores[order]
    once = np.ones(len(rows), bool)
    once[1:] = (rows[1:] != rows[:-1]) | (ids[1:] != ids[:-1])
    rows, ids, scores = rows[once], ids[once], scores[once]
    if not len(rows):
        return out_scores, out_ids
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    rank = np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
    top = rank < k
    out_scores[rows[top], rank[top]] = scores[top]
    out_ids[rows[top], rank[top]] = ids[top]
    return out_scores, out_ids


class Nearest:
    """Some queries' candidates, offered a block of products at a time, then the ``k`` best of
    each by score (:meth:`best`). Each query's k-th best product so far (``floor``) narrows
    later blocks to the few products that reach near it."""

    def __init__(self, queries: int, k: int, dim: int, repeats: bool = False):
        self.k, self.width, self.repeats = k, band(dim), repeats
        self.floor = np.full(queries, -np.inf, np.float32)
        self.found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.held = 0

    @property
    def unbounded(self) -> bool:
        """Some query has no k-th best product yet."""
        return bool(np.isneginf(self.floor).any())

    def offer(self, rows: np.ndarray, ids: np.ndarray, products: np.ndarray, narrow: bool = False) -> None:
        """A block: ``products`` (len(rows), len(ids)) of the queries ``rows`` with the vectors
        ``ids``. ``narrow``: update each query's k-th best now (when every query was in the
        block); else once the candidates held pass a few per query."""
        r, c = within_band(products, self.k, self.width, self.floor[rows])
        self.found.append((rows[r], ids[c], products[r, c]))
        self.held += len(r)
        if narrow or self.held > 4 * self.k * len(self.floor):
            self._narrow()

    def _narrow(self) -> None:
        parts = self.found or [(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))]
        rows, ids, products, bounded, kth = narrowed(*(np.concatenate(p) for p in zip(*parts)),
                                                     self.k, self.width, self.repeats)
        self.floor[bounded] = np.maximum(self.floor[bounded], kth)
        self.found, self.held = [(rows, ids, products)], len(rows)

    def candidates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, ids, products) that may be among each query's ``k`` best."""
        self._narrow()
        return self.found[0]

    def best(self, score) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (queries, k): ``score(rows, ids)`` gives the candidates' scores."""
        rows, ids, _ = self.candidates()
        return chosen(rows, ids, score(rows, ids), len(self.floor), self.k)
