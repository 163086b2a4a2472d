"""Similarity indexes: ``exact`` (blocked matrix products, the reference) and ``hnsw`` (hnswlib)."""

from __future__ import annotations

import numpy as np

import curate
from curate.settings import Setting
from curate.similarity import IndexKind, SimilarityIndex

_BLOCK = 8192
# Below this many vectors numpy's blocked products beat hnswlib on this 2-core machine
# (measured with bench/index_scale.py; see bench/README.md).
AUTO_EXACT_MAX = 100_000
# On a GPU the exact search stays the default up to here: a million 1024-d vectors are 4 GB and
# 10^12 products (estimated, not yet measured on a GPU: see bench/README.md).
AUTO_EXACT_MAX_GPU = 1_000_000


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


class TorchExactIndex(SimilarityIndex):
    """:class:`ExactIndex` with the vectors and the blocked products on a torch device (a GPU:
    a million vectors are then an exact search of minutes, not hours). Float32 products at
    full precision (no TF32), so results match the numpy index but for ties' order."""

    QUERY_BLOCK, DATA_BLOCK = 4096, 65536

    def __init__(self, dim: int, capacity: int, device: str):
        import torch
        self.torch, self.device = torch, device
        self.data = torch.zeros((max(capacity, 1), dim), dtype=torch.float32, device=device)
        self.size = 0

    def __len__(self):
        return self.size

    def add(self, vectors):
        torch = self.torch
        end = self.size + len(vectors)
        if end > len(self.data):
            grown = torch.zeros((max(end, 2 * len(self.data)), self.data.shape[1]), dtype=torch.float32,
                                device=self.device)
            grown[:self.size] = self.data[:self.size]
            self.data = grown
        self.data[self.size:end] = torch.as_tensor(np.ascontiguousarray(vectors, np.float32), device=self.device)
        self.size = end

    def _blocks(self, queries):
        """(query offset, data offset, similarity block) over every pair of blocks."""
        torch = self.torch
        precision = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")
        try:
            with torch.inference_mode():
                for q0 in range(0, len(queries), self.QUERY_BLOCK):
                    chunk = torch.as_tensor(np.ascontiguousarray(queries[q0:q0 + self.QUERY_BLOCK], np.float32),
                                            device=self.device)
                    for d0 in range(0, self.size, self.DATA_BLOCK):
                        yield q0, d0, chunk @ self.data[d0:min(d0 + self.DATA_BLOCK, self.size)].T
        finally:
            torch.set_float32_matmul_precision(precision)

    def search(self, queries, k):
        torch = self.torch
        best_sims = np.full((len(queries), k), -np.inf, np.float32)
        best_ids = np.full((len(queries), k), -1, np.int64)
        merged = None                     # (query offset, sims, ids) of the block being searched
        for q0, d0, block in self._blocks(queries):
            sims, ids = torch.topk(block, min(k, block.shape[1]), dim=1)
            ids = ids + d0
            if merged is not None and merged[0] == q0:
                sims, ids = torch.cat([merged[1], sims], 1), torch.cat([merged[2], ids], 1)
                sims, order = torch.topk(sims, min(k, sims.shape[1]), dim=1)
                ids = torch.gather(ids, 1, order)
            merged = (q0, sims, ids)
            if d0 + self.DATA_BLOCK >= self.size:     # the query block's last data block: copy out
                rows = slice(q0, q0 + len(sims))
                best_sims[rows, :sims.shape[1]] = sims.cpu().numpy()
                best_ids[rows, :ids.shape[1]] = ids.cpu().numpy()
        return best_sims, best_ids

    def range_search(self, queries, threshold):
        rows, ids, sims = [], [], []
        for q0, d0, block in self._blocks(queries):
            r, c = (block >= threshold).nonzero(as_tuple=True)
            rows.append((r + q0).cpu().numpy())
            ids.append((c + d0).cpu().numpy())
            sims.append(block[r, c].cpu().numpy())
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        return (np.concatenate(rows).astype(np.int64), np.concatenate(ids).astype(np.int64),
                np.concatenate(sims).astype(np.float32))


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def exact_index(dim: int, capacity: int) -> SimilarityIndex:
    """The exact index: numpy's products on the CPU, torch's on a GPU for large groups (where
    the GPU's speed outweighs importing torch and copying the vectors there)."""
    if capacity > AUTO_EXACT_MAX and cuda_available():
        return TorchExactIndex(dim, capacity, "cuda")
    return ExactIndex(dim, capacity)


class Exact(IndexKind):
    name = "exact"
    description = "exact cosine similarity by blocked matrix products (the reference; on a GPU when there is one)"

    def new(self, dim, capacity, **options):
        return exact_index(dim, capacity)


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


HNSW_SETTINGS = (
    Setting("hnsw_m", int, 16, minimum=2, maximum=512, help="HNSW graph degree M."),
    Setting("hnsw_ef_construction", int, 64, minimum=1, maximum=10_000,
            help="HNSW ef_construction (build-time search width)."),
    Setting("hnsw_ef", int, 32, minimum=1, maximum=10_000, help="HNSW ef (query-time search width)."),
)


class Hnsw(IndexKind):
    name = "hnsw"
    description = "approximate nearest neighbours with hnswlib (cosine; settings hnsw_m, hnsw_ef_construction, hnsw_ef)"
    settings = HNSW_SETTINGS

    def new(self, dim, capacity, hnsw_m=16, hnsw_ef_construction=64, hnsw_ef=32, **settings):
        return HnswIndex(dim, capacity, m=hnsw_m, ef_construction=hnsw_ef_construction, ef=hnsw_ef)


class Auto(IndexKind):
    name = "auto"
    description = (f"exact for groups up to {AUTO_EXACT_MAX:,} images ({AUTO_EXACT_MAX_GPU:,} on a GPU), "
                   "hnsw above")
    settings = HNSW_SETTINGS            # for the groups that get an hnsw index

    def new(self, dim, capacity, **settings):
        if capacity <= AUTO_EXACT_MAX or (capacity <= AUTO_EXACT_MAX_GPU and cuda_available()):
            return exact_index(dim, capacity)
        return Hnsw().new(dim, capacity, **settings)


@curate.hookimpl
def register_indexes(register):
    register(Exact)
    register(Hnsw)
    register(Auto)
