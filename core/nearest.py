"""Each vector's k nearest, the same whichever index, process or machine finds them.

A float32 product's last bits depend on how the products are cut and threaded (a Ray task on
one thread and the driver on two differ), so products only propose candidates: the k best are
chosen by :func:`curate.similarity.similarities` (the score every pair gets), ties to the
earlier id. A product differs from that score by at most :func:`product_error`, so a query's
candidates are every vector whose product is within twice that of the query's k-th best
product (:func:`within_band`, :func:`narrowed`): the k best by score are always among them.

The report wants an image's nearest whatever its similarity, and past it only neighbours at or
above the lowest similarity it charts (:class:`Wanted`): products far below that propose
nothing, which keeps the candidates of dissimilar images few.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def product_error(dim: int) -> float:
    """The most a float32 product of two unit vectors of ``dim`` components differs from their
    score (``dim`` x 2^-24 from its sums, twice over): what
    :func:`curate.similarity.search_threshold` lowers a threshold by."""
    return 2 * dim * 2.0 ** -24


def band(dim: int) -> float:
    """How far below a query's k-th best product a candidate may lie and still be among its k
    best by score: the k-th best score is at least the k-th product less one error, and a
    candidate's product at most one error below its score."""
    return 2 * product_error(dim)


@dataclass(frozen=True)
class Wanted:
    """Which of a query's best are wanted: its ``k`` best by score, but past its first
    ``always`` only those scoring at least ``least``."""

    k: int
    least: float = -np.inf
    always: int = 1

    def cut(self, kth: np.ndarray, always_th: np.ndarray, width: float) -> np.ndarray:
        """Per row, the lowest product that may still be wanted, from its k-th and
        ``always``-th best products (lower bounds; -inf where unknown)."""
        return np.minimum(np.maximum(kth, np.float32(self.least)), always_th) - np.float32(width)


def within_band(products: np.ndarray, wanted: Wanted, width: float, bounds: np.ndarray | None = None):
    """(rows, columns, bounds) of a block of products that may be wanted (:class:`Wanted`) by
    its rows, and the bounds it used: per row, lower bounds of its k-th and ``always``-th best
    products ((rows, 2), -inf where unknown): ``bounds`` (found before) where known, else the
    block's own (:func:`lower_bounds`)."""
    best = np.full((len(products), 2), -np.inf, np.float32) if bounds is None else np.array(bounds, np.float32)
    unknown = np.flatnonzero(np.isneginf(best).any(axis=1))
    if len(unknown):
        best[unknown] = np.maximum(best[unknown], lower_bounds(products[unknown], (wanted.k, wanted.always)))
    rows, columns = np.nonzero(products >= wanted.cut(best[:, 0], best[:, 1], width)[:, None])
    return rows, columns, best


def lower_bounds(products: np.ndarray, ranks) -> np.ndarray:
    """Per row, for each rank r, a lower bound of its r-th best product (-inf where it has
    fewer columns): the least of the maxima of r groups of its columns (r different products
    reach it). One pass over the block, where selecting the r-th best itself costs a
    partition of every row (a third of a search task's time)."""
    rows, columns = products.shape
    out = np.full((rows, len(ranks)), -np.inf, np.float32)
    for i, r in enumerate(ranks):
        if columns >= r and rows:
            starts = (np.arange(r) * columns) // r
            out[:, i] = np.maximum.reduceat(products, starts, axis=1).min(axis=1)
    return out


def narrowed(rows: np.ndarray, ids: np.ndarray, products: np.ndarray, wanted: Wanted, width: float,
             repeats: bool = False):
    """Candidates (``rows``, ``ids``, ``products``, any order) narrowed to those that may be
    wanted: (rows, ids, products, the rows seen, their k-th and ``always``-th best products
    ((rows, 2), -inf where fewer)). ``repeats``: an id may come twice for a row (a vector
    stored in two partitions): counted once, with its higher product."""
    order = np.lexsort((-products, rows))
    rows, ids, products = rows[order], ids[order], products[order]
    if repeats and len(rows):
        by_pair = np.lexsort((-products, ids, rows))
        first = np.ones(len(rows), bool)
        first[1:] = (rows[by_pair][1:] != rows[by_pair][:-1]) | (ids[by_pair][1:] != ids[by_pair][:-1])
        keep = np.sort(by_pair[first])
        rows, ids, products = rows[keep], ids[keep], products[keep]
    starts, counts = _runs(rows)
    best = np.full((len(starts), 2), -np.inf, np.float32)
    for i, rank in enumerate((wanted.k, wanted.always)):
        full = counts >= rank
        best[full, i] = products[starts[full] + rank - 1]
    keep = products >= np.repeat(wanted.cut(best[:, 0], best[:, 1], width), counts)
    return rows[keep], ids[keep], products[keep], rows[starts], best


def chosen(rows: np.ndarray, ids: np.ndarray, scores: np.ndarray, queries: int, wanted: Wanted):
    """Each of ``queries`` rows' wanted candidates (:class:`Wanted`), best by score first,
    ties to the earlier id: (scores, ids), each (queries, k), padded with -inf and -1. An id
    given twice for a row counts once (its scores are equal: the same two vectors)."""
    k = wanted.k
    out_scores = np.full((queries, k), -np.inf, np.float32)
    out_ids = np.full((queries, k), -1, np.int64)
    order = np.lexsort((ids, -scores, rows))
    rows, ids, scores = rows[order], ids[order], scores[order]
    once = np.ones(len(rows), bool)
    once[1:] = (rows[1:] != rows[:-1]) | (ids[1:] != ids[:-1])
    rows, ids, scores = rows[once], ids[once], scores[once]
    starts, counts = _runs(rows)
    rank = np.arange(len(rows)) - np.repeat(starts, counts)
    top = (rank < k) & ((rank < wanted.always) | (scores >= wanted.least))
    out_scores[rows[top], rank[top]] = scores[top]
    out_ids[rows[top], rank[top]] = ids[top]
    return out_scores, out_ids


def _runs(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each row's run starts in ``rows`` (sorted), and its length."""
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]]) if len(rows) else np.zeros(0, np.int64)
    return starts, np.diff(np.r_[starts, len(rows)])


class Nearest:
    """Some queries' candidates, offered a block of products at a time, then the wanted ones
    of each by score (:meth:`best`). Each query's best products so far (``bounds``) narrow
    later blocks to the few products that reach near them."""

    def __init__(self, queries: int, wanted: Wanted, dim: int, repeats: bool = False):
        self.wanted, self.width, self.repeats = wanted, band(dim), repeats
        self.bounds = np.full((queries, 2), -np.inf, np.float32)
        self.found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.held = 0

    @property
    def unbounded(self) -> bool:
        """Some query has no bounds yet."""
        return bool(np.isneginf(self.bounds).any())

    def offer(self, rows: np.ndarray, ids: np.ndarray, products: np.ndarray, narrow: bool = False) -> None:
        """A block: ``products`` (len(rows), len(ids)) of the queries ``rows`` with the vectors
        ``ids``. ``narrow``: update each query's bounds now (when every query was in the
        block); else once the candidates held pass a few per query."""
        r, c, bounds = within_band(products, self.wanted, self.width, self.bounds[rows])
        self.bounds[rows] = bounds
        self.found.append((rows[r], ids[c], products[r, c]))
        self.held += len(r)
        if narrow or self.held > 4 * self.wanted.k * len(self.bounds):
            self._narrow()

    def _narrow(self) -> None:
        parts = self.found or [(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))]
        rows, ids, products, seen, best = narrowed(*(np.concatenate(p) for p in zip(*parts)),
                                                   self.wanted, self.width, self.repeats)
        self.bounds[seen] = np.maximum(self.bounds[seen], best)
        self.found, self.held = [(rows, ids, products)], len(rows)

    def candidates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, ids, products) that may be wanted by each query."""
        self._narrow()
        return self.found[0]

    def best(self, score) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (queries, k): ``score(rows, ids)`` gives the candidates' scores."""
        rows, ids, _ = self.candidates()
        return chosen(rows, ids, score(rows, ids), len(self.bounds), self.wanted)
