"""Similarity indexes and the keep/remove walk that decides which images stay.

An index holds unit vectors (cosine similarity = dot product) and answers top-k and
"every neighbour with similarity >= t" queries. The walk goes through images in order
of first appearance: an image is removed when an already kept image has similarity >= t
with it (recording the most similar kept one), otherwise it is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .contracts import IndexKind, SimilarityIndex  # noqa: F401  (re-exported)


@dataclass
class WalkResult:
    duplicate_of: np.ndarray   # (n,) position of the kept image it duplicates, -1 when kept
    score: np.ndarray          # (n,) similarity to that image (0 when kept)

    @property
    def kept(self) -> np.ndarray:
        return self.duplicate_of < 0


def keep_or_remove(vectors: np.ndarray, kind: IndexKind, threshold: float, block: int = 1024,
                   **options) -> WalkResult:
    """The greedy walk, a block at a time: each block is checked against the kept images
    of earlier blocks through the index, then within itself in order (exactly)."""
    n = len(vectors)
    duplicate_of = np.full(n, -1, np.int64)
    score = np.zeros(n, np.float32)
    if n == 0:
        return WalkResult(duplicate_of, score)
    index = kind.new(vectors.shape[1], n, **options)
    kept_ids: list[int] = []
    for start in range(0, n, block):
        chunk = vectors[start:start + block]
        if len(index):
            sims, ids = index.search(chunk, 1)
            best_sim, best_id = sims[:, 0].copy(), ids[:, 0]
        else:
            best_sim, best_id = np.full(len(chunk), -np.inf, np.float32), np.full(len(chunk), -1)
        within = chunk @ chunk.T
        kept_here: list[int] = []
        for i in range(len(chunk)):
            candidate_sim = best_sim[i]
            candidate = kept_ids[best_id[i]] if best_id[i] >= 0 else -1
            if kept_here:
                row = within[i, kept_here]
                j = int(row.argmax())
                if row[j] > candidate_sim:
                    candidate_sim, candidate = row[j], start + kept_here[j]
            if candidate >= 0 and candidate_sim >= threshold:
                duplicate_of[start + i] = candidate
                score[start + i] = candidate_sim
            else:
                kept_here.append(i)
        if kept_here:
            index.add(chunk[kept_here])
            kept_ids.extend(start + i for i in kept_here)
    return WalkResult(duplicate_of, score)


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
