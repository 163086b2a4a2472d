"""Similarity indexes and the keep/remove walk that decides which images stay.

An index holds unit vectors (cosine similarity = dot product) and answers top-k and
"every neighbour with similarity >= t" queries. The walk goes through images in order
of first appearance: an image is removed when an already kept image has similarity >= t
with it (recording the most similar kept one), otherwise it is kept. With several signals
(the embedding, a perceptual hash, an exact hash: each a unit vector per image), each has
its own t, and a match in any of them removes the image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .contracts import IndexKind, SimilarityIndex  # noqa: F401  (re-exported)


@dataclass
class Channel:
    """One signal's vectors for a group of images, searched with an index at its own threshold."""

    name: str
    vectors: np.ndarray
    threshold: float
    kind: IndexKind
    options: dict = field(default_factory=dict)


@dataclass
class WalkResult:
    duplicate_of: np.ndarray   # (n,) position of the kept image it duplicates, -1 when kept
    score: np.ndarray          # (n,) similarity to that image in the signal that fired (0 when kept)
    signal: np.ndarray = None  # (n,) which channel fired (its position), -1 when kept

    @property
    def kept(self) -> np.ndarray:
        return self.duplicate_of < 0


def walk(channels: list[Channel], block: int = 1024) -> WalkResult:
    """The greedy walk over several signals at once, a block at a time: an image is removed
    when, in any channel, an already kept image reaches that channel's threshold; the first
    channel (in the order given) that fires is recorded, with its most similar kept image.
    Each block is checked against the kept images of earlier blocks through each channel's
    index, then within itself in order (exactly)."""
    n = len(channels[0].vectors)
    duplicate_of = np.full(n, -1, np.int64)
    score = np.zeros(n, np.float32)
    fired = np.full(n, -1, np.int8)
    if n == 0:
        return WalkResult(duplicate_of, score, fired)
    indexes = [c.kind.new(c.vectors.shape[1], n, **c.options) for c in channels]
    kept_ids: list[int] = []
    for start in range(0, n, block):
        stop = min(n, start + block)
        candidates = []
        for channel, index in zip(channels, indexes):
            chunk = channel.vectors[start:stop]
            best_sim = np.full(len(chunk), -np.inf, np.float32)
            best_id = np.full(len(chunk), -1, np.int64)
            if len(index):
                sims, ids = index.search(chunk, 1)
                found = ids[:, 0] >= 0
                best_sim[found] = sims[found, 0]
                best_id[found] = np.asarray(kept_ids, np.int64)[ids[found, 0]]
            candidates.append((best_sim, best_id, chunk @ chunk.T))
        kept_here: list[int] = []
        for i in range(stop - start):
            for k, (channel, (best_sim, best_id, within)) in enumerate(zip(channels, candidates)):
                sim, partner = best_sim[i], best_id[i]
                if kept_here:
                    row = within[i, kept_here]
                    j = int(row.argmax())
                    if row[j] > sim:
                        sim, partner = row[j], start + kept_here[j]
                if partner >= 0 and sim >= channel.threshold:
                    duplicate_of[start + i], score[start + i], fired[start + i] = partner, sim, k
                    break
            else:
                kept_here.append(i)
        if kept_here:
            for channel, index in zip(channels, indexes):
                index.add(channel.vectors[start:stop][kept_here])
            kept_ids.extend(start + i for i in kept_here)
    return WalkResult(duplicate_of, score, fired)


def keep_or_remove(vectors: np.ndarray, kind: IndexKind, threshold: float, block: int = 1024,
                   **options) -> WalkResult:
    """The walk with one signal: the embedding's vectors at ``threshold``."""
    return walk([Channel("embedding", vectors, threshold, kind, options)], block)


NEIGHBOURS = 16                                  # per image, for the report's kept pairs and curve
CURVE_THRESHOLDS = np.round(np.arange(0.50, 1.0001, 0.01), 2)   # at most 64: one bit each


def nearest_neighbours(vectors: np.ndarray, kind: IndexKind, k: int = NEIGHBOURS,
                       **options) -> tuple[np.ndarray, np.ndarray]:
    """Each vector's ``k`` most similar other vectors: (similarities, positions), best first,
    padded with -inf and -1 where the group has fewer."""
    n = len(vectors)
    sims = np.full((n, k), -np.inf, np.float32)
    ids = np.full((n, k), -1, np.int64)
    if n < 2:
        return sims, ids
    index = kind.new(vectors.shape[1], n, **options)
    index.add(vectors)
    found_sims, found_ids = index.search(vectors, min(k + 1, n))
    others = (found_ids != np.arange(n)[:, None]) & (found_ids >= 0)
    order = np.argsort(~others, axis=1, kind="stable")[:, :k]      # the others first, best first
    take = order.shape[1]
    keep = np.take_along_axis(others, order, 1)
    sims[:, :take] = np.where(keep, np.take_along_axis(found_sims, order, 1), -np.inf)
    ids[:, :take] = np.where(keep, np.take_along_axis(found_ids, order, 1), -1)
    return sims, ids


def kept_curve(sims: np.ndarray, ids: np.ndarray, thresholds: np.ndarray = CURVE_THRESHOLDS) -> np.ndarray:
    """Which images the walk (this signal alone) keeps at each of ``thresholds``, from the
    neighbour lists of :func:`nearest_neighbours`: bit g of entry i is set when image i is
    kept at ``thresholds[g]``. One pass in order of appearance serves every threshold; it is
    exact while no image has more than ``k`` neighbours above the lowest threshold (beyond
    that it may keep a few too many)."""
    if len(thresholds) > 64:
        raise ValueError("kept_curve takes at most 64 thresholds")
    n = len(sims)
    every = (1 << len(thresholds)) - 1
    earlier = (ids >= 0) & (ids < np.arange(n)[:, None]) & (sims >= thresholds[0])
    # how many of the (ascending) thresholds each similarity reaches
    reached = np.searchsorted(thresholds, sims, side="right")
    kept = [every] * n
    for i in np.flatnonzero(earlier.any(axis=1)).tolist():
        removed = 0
        for j, count in zip(ids[i][earlier[i]].tolist(), reached[i][earlier[i]].tolist()):
            removed |= kept[j] & ((1 << count) - 1)
        kept[i] = every & ~removed
    return np.asarray(kept, np.uint64)


def kept_counts(kept: np.ndarray, thresholds: np.ndarray = CURVE_THRESHOLDS) -> list[int]:
    """How many of the images in ``kept`` (bits from :func:`kept_curve`) stay at each threshold."""
    return [int(((kept >> np.uint64(g)) & np.uint64(1)).sum()) for g in range(len(thresholds))]
