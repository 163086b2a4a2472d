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


def nearest_neighbour_similarity(vectors: np.ndarray, kind: IndexKind, **options) -> np.ndarray:
    """For each vector, its similarity to the most similar other vector (nan when alone)."""
    n = len(vectors)
    out = np.full(n, np.nan, np.float32)
    if n < 2:
        return out
    index = kind.new(vectors.shape[1], n, **options)
    index.add(vectors)
    sims, ids = index.search(vectors, 2)
    own = ids == np.arange(n)[:, None]
    other = np.where(own, -np.inf, sims)
    best = other.max(axis=1)
    out[:] = np.where(np.isfinite(best), best, np.nan)
    return out
