"""Similarity indexes: ``exact`` (blocked matrix products, the reference) and ``hnsw`` (hnswlib)."""

from __future__ import annotations

import numpy as np

import curate
from curate.similarity import IndexKind, SimilarityIndex

_BLOCK = 8192


class ExactIndex(SimilarityIndex):
    def __init__(self, dim: int, capacity: int):
        self.data = np.zeros((max(capacity, 1), dim), np.float32)
        self.size = 0

    def __len__(self):
        return self.size

    def add(self, vectors):
        end = self.size + len(vectors)
        if end > len(self.data):
            grown = np.zeros((max(end, 2 * len(self.data)), self.data.shape[1]), np.float32)
            grown[:self.size] = self.data[:self.size]
            self.data = grown
        self.data[self.size:end] = vectors
        self.size = end

    def search(self, queries, k):
        q = len(queries)
        best_sims = np.full((q, k), -np.inf, np.float32)
        best_ids = np.full((q, k), -1, np.int64)
        for start in range(0, self.size, _BLOCK):
            sims = queries @ self.data[start:min(start + _BLOCK, self.size)].T
            take = min(k, sims.shape[1])
            part = np.argpartition(-sims, take - 1, axis=1)[:, :take] if take < sims.shape[1] \
                else np.broadcast_to(np.arange(sims.shape[1]), sims.shape)
            cand_sims = np.concatenate([best_sims, np.take_along_axis(sims, part, 1)], axis=1)
            cand_ids = np.concatenate([best_ids, part + start], axis=1)
            order = np.argsort(-cand_sims, axis=1, kind="stable")[:, :k]
            best_sims = np.take_along_axis(cand_sims, order, 1)
            best_ids = np.take_along_axis(cand_ids, order, 1)
        return best_sims, best_ids

    def range_search(self, queries, threshold):
        rows, ids, sims = [], [], []
        for start in range(0, self.size, _BLOCK):
            block = queries @ self.data[start:min(start + _BLOCK, self.size)].T
            r, c = np.nonzero(block >= threshold)
            rows.append(r)
            ids.append(c + start)
            sims.append(block[r, c])
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        return np.concatenate(rows), np.concatenate(ids).astype(np.int64), np.concatenate(sims)


class Exact(IndexKind):
    name = "exact"
    description = "exact cosine similarity by blocked matrix products (the reference)"

    def new(self, dim, capacity, **options):
        return ExactIndex(dim, capacity)


class HnswIndex(SimilarityIndex):
    def __init__(self, dim, capacity, m=16, ef_construction=64, ef=32):
        import hnswlib
        self.index = hnswlib.Index(space="ip", dim=dim)
        self.index.init_index(max_elements=max(capacity, 1), M=int(m), ef_construction=int(ef_construction))
        self.ef = int(ef)
        self.index.set_num_threads(-1)

    def __len__(self):
        return self.index.get_current_count()

    def add(self, vectors):
        start = len(self)
        if start + len(vectors) > self.index.get_max_elements():
            self.index.resize_index(max(start + len(vectors), 2 * self.index.get_max_elements()))
        self.index.add_items(np.ascontiguousarray(vectors, np.float32), np.arange(start, start + len(vectors)))

    def search(self, queries, k):
        n = len(self)
        take = min(k, n)
        sims = np.full((len(queries), k), -np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        if take == 0:
            return sims, ids
        self.index.set_ef(max(self.ef, take))
        labels, distances = self.index.knn_query(np.ascontiguousarray(queries, np.float32), k=take)
        sims[:, :take] = 1.0 - distances          # "ip" distance is 1 - dot product
        ids[:, :take] = labels
        return sims, ids

    def range_search(self, queries, threshold):
        """Top-k queries with k doubled for the rows whose k-th neighbour still reaches the threshold."""
        rows_out, ids_out, sims_out = [], [], []
        pending = np.arange(len(queries))
        k = 16
        while len(pending):
            sims, ids = self.search(queries[pending], k)
            full = (sims[:, -1] >= threshold) & (k < len(self))
            done = ~full
            r, c = np.nonzero((sims >= threshold) & done[:, None])
            rows_out.append(pending[r])
            ids_out.append(ids[r, c])
            sims_out.append(sims[r, c])
            pending = pending[full]
            k *= 2
        if not rows_out:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        return np.concatenate(rows_out), np.concatenate(ids_out), np.concatenate(sims_out)


class Hnsw(IndexKind):
    name = "hnsw"
    description = "approximate nearest neighbours with hnswlib (cosine; options m, ef_construction, ef)"

    def new(self, dim, capacity, m=16, ef_construction=64, ef=32, **options):
        return HnswIndex(dim, capacity, m=m, ef_construction=ef_construction, ef=ef)


# Below this many vectors numpy's blocked products beat hnswlib on this 2-core machine
# (measured with bench/index_scale.py; see bench/README.md).
AUTO_EXACT_MAX = 100_000


class Auto(IndexKind):
    name = "auto"
    description = f"exact for groups up to {AUTO_EXACT_MAX:,} images, hnsw above (the measured crossover)"

    def new(self, dim, capacity, **options):
        if capacity <= AUTO_EXACT_MAX:
            return ExactIndex(dim, capacity)
        return Hnsw().new(dim, capacity, **options)


@curate.hookimpl
def register_indexes(register):
    register(Exact)
    register(Hnsw)
    register(Auto)
