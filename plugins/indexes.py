"""Similarity indexes: ``exact`` (blocked matrix products, the reference), ``partitioned`` (exact
products within k-means partitions) and ``hnsw`` (hnswlib)."""

from __future__ import annotations

import math

import numpy as np

import curate
from curate.gather import gather
from curate.nearest import Nearest, Wanted
from curate.plugins.centroids import Centroids, grouped
from curate.plugins.products import PRODUCTS, bfloat16_margin, partition_products  # noqa: F401  (the index's arithmetic)
from curate.settings import Setting
from curate.similarity import IndexKind, SimilarityIndex, pair_similarities

_BLOCK = 8192
_QUERY_BLOCK = 2048           # queries per product: 2048 x 8192 float32 is 64 MB
# Below this many vectors numpy's blocked products beat hnswlib on this 2-core machine
# (measured with bench/index_scale.py; see bench/README.md).
AUTO_EXACT_MAX = 100_000
# On a GPU the exact search stays the default up to here: a million 1024-d vectors are 4 GB and
# 10^12 products (estimated, not yet measured on a GPU: see bench/README.md).
AUTO_EXACT_MAX_GPU = 1_000_000
# The partitioned index: about this many vectors per partition, each query searched in its
# PROBE nearest partitions, k-means trained on SAMPLE_PER_PARTITION vectors per partition
# once the index holds PARTITION_TRAIN_AT (below that it is exact). On planted 768-d vectors
# the recall at a given probe barely moves with the partitions' size, while the products per
# query are probe x size: 250 and 32 found 99.62% of the pairs at 0.8 among 1M in 122.5 s
# (1,000 and 16: 98.68% in 248 s), 99.81% among 200K (bench/README.md, "Partitioned search").
# At 10M (17,888 partitions, see default_partitions) probe 32 finds 97.6-97.8%, 80 finds 99.6%
# and 96 99.85% for 2.5x and 3x the search; spill 2 finds 99.6% at probe 32 for twice the search
# and the store (bench/README.md, "Recall at 10M, from the centroids").
PARTITION_SIZE = 250
PROBE = 32
SPILL = 1
SAMPLE_PER_PARTITION = 32
PARTITION_TRAIN_AT = 20_000
SEARCH_QUERIES = 32_768       # queries a top-k search holds candidates for at once


class ExactIndex(SimilarityIndex):
    exact_scores = True

    def __init__(self, dim: int, capacity: int):
        self.data = np.zeros((max(capacity, 1), dim), np.float32)
        self.size = 0

    @classmethod
    def over(cls, vectors: np.ndarray) -> "ExactIndex":
        """An exact index over ``vectors`` as they are, not copied (a memmap stays mapped); a
        later :meth:`add` copies them into an array of its own first."""
        index = cls.__new__(cls)
        index.data, index.size = vectors, len(vectors)
        return index

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

    def search(self, queries, k, wanted: Wanted | None = None):
        """The ``k`` best by score (:mod:`curate.nearest`; ``wanted``: which), ``_QUERY_BLOCK`` queries at a time:
        all of them against a block at once held products for every query (11.8 GB for the
        report's neighbours of 60K vectors). Once each query has a k-th best product, a block's
        products only count where they come near it (few do)."""
        wanted = wanted or Wanted(k)
        return _top_k_in_parts(queries, k, _QUERY_BLOCK, lambda start, part: self._search_part(part, wanted))

    def _search_part(self, queries, wanted: Wanted):
        nearest = Nearest(len(queries), wanted, self.data.shape[1])
        rows = np.arange(len(queries))
        for start in range(0, self.size, _BLOCK):
            stop = min(start + _BLOCK, self.size)
            nearest.offer(rows, np.arange(start, stop), queries @ self.data[start:stop].T, narrow=nearest.unbounded)
        return nearest.best(lambda r, ids: pair_similarities(queries, r, ids, self.data))

    def range_search(self, queries, threshold):
        return self._pairs(queries, threshold, None)

    def block_pairs(self, queries, first, threshold, alive=None):
        """Only the pairs with an earlier vector: products are symmetric, so half of them suffice."""
        return self._pairs(queries, threshold, first, alive)

    def _pairs(self, queries, threshold, first, alive=None):
        """(rows, ids, similarities) >= threshold; with ``first``, only ids < first + row; with
        ``alive``, only ids whose entry is True."""
        rows, ids, sims = [], [], []
        for q0 in range(0, len(queries), _QUERY_BLOCK):
            chunk = queries[q0:q0 + _QUERY_BLOCK]
            end = self.size if first is None else min(self.size, first + q0 + len(chunk))
            for start in range(0, end, _BLOCK):
                block = chunk @ self.data[start:min(start + _BLOCK, end)].T
                hit = block >= threshold
                if alive is not None:
                    hit &= alive[start:start + block.shape[1]][None, :]
                if first is not None and start + block.shape[1] > first + q0:
                    hit &= (start + np.arange(block.shape[1]))[None, :] < (first + q0 + np.arange(len(chunk)))[:, None]
                r, c = np.nonzero(hit)
                rows.append(r + q0)
                ids.append(c + start)
                sims.append(block[r, c])
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        return np.concatenate(rows).astype(np.int64), np.concatenate(ids).astype(np.int64), np.concatenate(sims)


def _top_k_in_parts(queries, k: int, size: int, search_part) -> tuple[np.ndarray, np.ndarray]:
    """A top-k search ``size`` queries at a time, so that its candidates' memory follows the
    part, not the queries: ``search_part(start, part)`` answers the queries from ``start``."""
    if not len(queries):
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    found = [search_part(start, queries[start:start + size]) for start in range(0, len(queries), size)]
    return np.concatenate([sims for sims, _ in found]), np.concatenate([ids for _, ids in found])


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



def default_partitions(capacity: int, probe: int = PROBE) -> int:
    """About PARTITION_SIZE vectors a partition, but at most sqrt(probe x capacity) partitions:
    comparing every vector with every centroid costs capacity x partitions products, the search
    capacity x probe x (capacity / partitions), and this count makes them equal, the least of
    both. It binds above 2M vectors at probe 32 (at 10M: 17,888 partitions of 559, where
    40,000 of 250 would spend 1,400 s on the centroids alone). The index counts its partitions
    at the default probe whatever probe it is given: a larger probe, asked for recall, then
    costs search time in proportion and leaves the centroids' work as it is."""
    return max(1, min(capacity // PARTITION_SIZE, int(math.sqrt(probe * capacity))))


class PartitionedIndex(SimilarityIndex):
    """Exact products within partitions: k-means centroids are trained on a sample once the
    index holds ``train_at`` vectors (below that it is the exact index); each vector is stored
    in the partition of its nearest centroid, and each query is compared with every vector of
    its ``probe`` nearest partitions, so that a neighbour across a partition boundary is found
    in the next-closest one. The partitions hold their vectors in bf16 where that is fast
    (``products``: see :func:`partition_products`); the similarities reported are always
    float32 dot products of the vectors given."""

    exact_scores = True

    # Queries encoded at once (bf16: 349,525 at 768-d, about 2,800 per partition of a 1M index at
    # probe 32): fewer, larger products per partition, whose fixed costs then matter less.
    QUERY_CHUNK_BYTES = 512 << 20
    STORE_ROWS = 16384                                # vectors encoded at once into the store on training

    def __init__(self, dim: int, capacity: int, partitions: int | None = None, probe: int = PROBE,
                 spill: int = SPILL, train_at: int = PARTITION_TRAIN_AT, products: str = "auto"):
        self.flat = ExactIndex.over(np.zeros((0, dim), np.float32))   # every vector, in order of addition
        self.partitions = int(partitions or default_partitions(capacity))   # the probe buys recall, not partitions
        self.probe = min(int(probe), self.partitions)
        self.spill = min(int(spill), self.partitions)
        self.train_at = max(int(train_at), self.partitions)
        self.products_kind = products
        self.products = None                          # chosen on training
        self.centroids = None
        self.members: list[np.ndarray] = []           # per partition: positions
        self.data: list = []                          # per partition: their vectors, encoded (with spare rows)
        self.counts = np.zeros(self.partitions, np.int64)
        self.probes = np.zeros((0, self.probe), np.int32)   # per vector filed: the partitions it probes

    def __len__(self):
        return len(self.flat)

    @property
    def untrained(self) -> bool:
        """Still below its training size: the exact index of its vectors answers."""
        return len(self.flat) < self.train_at and self.centroids is None

    @property
    def vectors(self) -> np.ndarray:
        """Every vector given, in order of addition (float32)."""
        return self.flat.data[:len(self.flat)]

    def add(self, vectors):
        """The first vectors are held as given, not copied (the usual call: every vector at once,
        perhaps a memmap); a later add copies them into an array that grows."""
        if not len(vectors):
            return
        start = len(self.flat)
        if start == 0:
            self.flat = ExactIndex.over(np.asarray(vectors, np.float32))
        else:
            self.flat.add(vectors)
        if self.centroids is not None:
            self._file(np.arange(start, len(self.flat)))

    def ready(self):
        if self.centroids is None and len(self.flat) >= self.train_at:
            self._train()

    def _train(self):
        vectors = self.vectors
        rng = np.random.default_rng(0)
        sample = gather(vectors, np.sort(rng.choice(len(vectors), min(len(vectors),
                                                                     SAMPLE_PER_PARTITION * self.partitions),
                                                    replace=False)))
        self.products = partition_products(vectors.shape[1], self.products_kind)
        self.centroids = Centroids.train(sample, self.partitions, self.products)
        del sample
        self._store(self._homes(np.arange(len(vectors))))

    def _homes(self, positions: np.ndarray) -> np.ndarray:
        """The ``spill`` nearest partitions of the vectors at ``positions``, which store them; their
        ``probe`` nearest, which they search as queries, are noted (the walk's and a self-join's
        queries are the vectors held: one comparison with the centroids serves both)."""
        homes, probes = [], []
        for chunk in np.array_split(positions, max(1, len(positions) // 16384)):
            nearest = self.centroids.nearest_each(self.flat.data[chunk], (self.spill, self.probe), self.products)
            homes.append(nearest[0])
            probes.append(nearest[1].astype(np.int32))
        if len(self.probes) < len(self.flat):     # doubling: adds a block at a time copy it O(log n) times
            grown = np.zeros((max(len(self.flat), 2 * len(self.probes)), self.probe), np.int32)
            grown[:len(self.probes)] = self.probes
            self.probes = grown
        self.probes[positions] = np.concatenate(probes)
        return np.concatenate(homes)

    def _store(self, homes: np.ndarray):
        """Every vector held into its ``homes`` (on training): one array, partition after
        partition, each partition's members and rows views of it, filled by reading the vectors
        in order (a memory-mapped file read once from start to end, not a row at a time in
        partition order, which at 10M vectors is a random read per row)."""
        flat = homes.ravel()
        order = np.argsort(flat, kind="stable")            # (vector, spill) entries in partition order
        self.counts = np.bincount(flat, minlength=self.partitions).astype(np.int64)
        bounds = np.concatenate([[0], np.cumsum(self.counts)])
        slots = np.empty(len(flat), np.int64)
        slots[order] = np.arange(len(flat))
        slots = slots.reshape(homes.shape)                  # each vector's rows in the store
        members = order // self.spill
        del order, flat
        store = self.products.empty(len(members), self.flat.data.shape[1])
        for start in range(0, len(homes), self.STORE_ROWS):
            encoded = self.products.encode(self.flat.data[start:start + self.STORE_ROWS])
            for copy in range(self.spill):
                store[slots[start:start + self.STORE_ROWS, copy]] = encoded
        self.members = [members[bounds[p]:bounds[p + 1]] for p in range(self.partitions)]
        self.data = [store[bounds[p]:bounds[p + 1]] for p in range(self.partitions)]

    def _file(self, positions: np.ndarray):
        """Vectors added after training, into their home partitions."""
        homes = self._homes(positions)
        for p, group in grouped(homes.ravel()):
            self._append(p, positions[group // self.spill])

    def _append(self, p: int, positions: np.ndarray):
        count, end = self.counts[p], self.counts[p] + len(positions)
        if end > len(self.members[p]):                # grow by doubling: adds stay amortised O(1)
            size = max(end, 2 * len(self.members[p]), 16)
            members = np.zeros(size, np.int64)
            members[:count] = self.members[p][:count]
            data = self.products.empty(size, self.data[p].shape[1])
            data[:count] = self.data[p][:count]
            self.members[p], self.data[p] = members, data
        self.members[p][count:end] = positions
        self.data[p][count:end] = self.products.encode(self.flat.data[positions])
        self.counts[p] = end

    def _probed(self, queries, first: int | None = None):
        """(partition, rows of ``queries`` that probe it) for each partition probed; ``first``:
        the queries are the vectors held at ``first``, ``first + 1``, ..., whose probes were
        found when they were filed."""
        self.ready()
        if first is not None:
            probes = self.probes[first:first + len(queries)]
        else:
            probes = self.centroids.nearest(queries, self.probe, self.products)
        flat = probes.ravel()
        for p, group in grouped(flat):
            if self.counts[p]:
                yield p, group // self.probe

    def _float32(self, p: int) -> np.ndarray:
        """Partition ``p``'s vectors in float32."""
        if self.products.exact:
            return self.data[p][:self.counts[p]]
        return self.flat.data[self.members[p][:self.counts[p]]]

    def search(self, queries, k, wanted: Wanted | None = None):
        """The ``k`` best by score (:mod:`curate.nearest`; ``wanted``: which) among the members
        of each query's probed partitions, ``SEARCH_QUERIES`` queries at
        a time: a query's candidates (probe x k of them, 12 bytes each) for every vector at once
        were 2.1 GB at 500K vectors (the report's neighbours), 42 GB at 10M. When the queries
        are the vectors held (the report's neighbours), their probes are those noted on filing:
        no second comparison of every vector with every centroid."""
        wanted = wanted or Wanted(k)
        if self.untrained:
            return self.flat.search(queries, k, wanted)
        held = self._held(queries)
        return _top_k_in_parts(queries, k, SEARCH_QUERIES,
                               lambda start, part: self._search_part(part, wanted, start if held else None))

    def _search_part(self, queries, wanted: Wanted, first: int | None = None):
        nearest = Nearest(len(queries), wanted, self.flat.data.shape[1], repeats=self.spill > 1)
        for p, rows in self._probed(queries, first):
            nearest.offer(rows, self.members[p][:self.counts[p]], queries[rows] @ self._float32(p).T)
        return nearest.best(lambda rows, ids: pair_similarities(queries, rows, ids, self.flat.data))

    def range_search(self, queries, threshold):
        if self.untrained:
            return self.flat.range_search(queries, threshold)
        return self._pairs(queries, threshold, first=0 if self._held(queries) else None)

    def _held(self, queries) -> bool:
        """Whether ``queries`` are the vectors held, the same array (a self-join)."""
        held = self.vectors
        return (queries.shape == held.shape and queries.dtype == held.dtype and queries.strides == held.strides
                and queries.__array_interface__["data"][0] == held.__array_interface__["data"][0])

    def block_pairs(self, queries, first, threshold, alive=None):
        """The pairs of every probed partition, but those with a removed image (below
        ``train_at``, the exact index's: only those with earlier images)."""
        return self._pairs(queries, threshold, alive, first)

    def span_pairs(self, queries, first, threshold, alive=None, limit=None):
        """:meth:`block_pairs` for many of the walk's blocks at once: each partition's share of
        65,536 queries is one product, not 16 small ones (at 1M vectors and 4,000 partitions a
        walk block gives a partition about 33 rows). None below the training size (the exact
        index's blocks are large already) or once the pairs pass ``limit``."""
        if self.untrained:
            return None
        return self._pairs(queries, threshold, alive, first, limit)

    def _pairs(self, queries, threshold, alive=None, first=None, limit=None):
        """(rows, ids, similarities) >= ``threshold``; None when there are more than ``limit``.
        ``first``: the queries are the vectors held from there on (the exact index's pairs
        below the training size are then those with earlier vectors only)."""
        if self.untrained:
            return self.flat._pairs(queries, threshold, first, alive)
        self.ready()
        chunk = max(1, self.QUERY_CHUNK_BYTES // (2 * queries.shape[1]))
        found, count = [], 0
        for q0 in range(0, len(queries), chunk):
            part = self._chunk_pairs(queries[q0:q0 + chunk], q0, threshold, alive,
                                     None if limit is None else limit - count, None if first is None else first + q0)
            if part is None:
                return None
            found.append(part)
            count += len(part[0])
        rows, ids, sims = (np.concatenate(parts) for parts in zip(*found))
        if self.spill > 1:                            # a vector stored twice counts once
            _, first = np.unique(rows * len(self.flat) + ids, return_index=True)
            rows, ids, sims = rows[first], ids[first], sims[first]
        return rows, ids, sims

    def _chunk_pairs(self, queries, q0: int, threshold: float, alive=None, limit=None, first=None):
        """(rows + ``q0``, ids, similarities) of ``queries``' pairs >= ``threshold``; None when
        there are more than ``limit`` (candidates, for bf16's products); ``first``: as
        :meth:`_probed`'s. bf16's candidates are rescored once all are found, the vectors read
        in file order (:func:`curate.gather.gather`)."""
        rows_out, ids_out, sims_out = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.float32)]
        encoded = self.products.encode(queries)
        count = 0
        with self.products.threads_for(len(queries) * self.probe // self.partitions):
            for rows, ids, sims in self._partition_hits(queries, encoded, threshold, alive, first):
                rows_out.append(rows)
                ids_out.append(ids)
                sims_out.append(sims)
                count += len(rows)
                if limit is not None and count > limit:
                    return None
        rows, ids = np.concatenate(rows_out), np.concatenate(ids_out)
        if self.products.exact:
            return rows + q0, ids, np.concatenate(sims_out)
        sims = pair_similarities(queries, rows, ids, self.flat.data)
        keep = sims >= threshold
        return rows[keep] + q0, ids[keep], sims[keep]

    def _partition_hits(self, queries, encoded, threshold: float, alive=None, first=None):
        """(rows, ids, similarities) of the pairs >= ``threshold`` in each probed partition (bf16:
        the candidates, similarities None)."""
        for p, rows in self._probed(queries, first):
            members = self.members[p][:self.counts[p]]
            data = self.products.operand(self.data[p][:self.counts[p]])
            for start in range(0, len(rows), _BLOCK):
                chunk = rows[start:start + _BLOCK]
                r, c, sims = self.products.hits(self.products.take(encoded, chunk), data, threshold)
                r, ids = chunk[r], members[c]
                if alive is not None:
                    keep = alive[ids]
                    r, ids = r[keep], ids[keep]
                    sims = None if sims is None else sims[keep]
                yield r, ids, sims


PARTITIONED_SETTINGS = (
    Setting("partitions", int, 0, minimum=0, maximum=10_000_000,
            help=f"Partitioned index: k-means partitions (0: one per {PARTITION_SIZE:,} vectors, at most "
                 f"sqrt({PROBE} x vectors): 17,888 for 10M)."),
    Setting("partition_probe", int, PROBE, minimum=1, maximum=10_000,
            help="Partitioned index: the nearest partitions each query is compared with. More finds more "
                 "pairs for proportionally more search time: of the pairs at 0.8 among planted vectors, 32 "
                 "finds 99.6% among 1M and 97.6-97.8% among 10M, where 64 finds 99.2%, 80 99.6% and 96 99.85%."),
    Setting("partition_spill", int, SPILL, minimum=1, maximum=64,
            help="Partitioned index: the nearest partitions each vector is stored in. 2 finds 99.6% of the pairs "
                 "at 0.8 among 10M planted vectors at probe 32, for twice the search time and the store's memory."),
    Setting("partition_products", str, "auto", choices=PRODUCTS,
            help="Partitioned index: how partitions are stored and multiplied. auto: bfloat16 where the CPU "
                 "has it in hardware, else float32; float16: half float32's memory, about 1.16x its time "
                 "(the same pairs: rounded products only propose candidates, rescored in float32)."),
)


class Partitioned(IndexKind):
    name = "partitioned"
    description = ("exact products within k-means partitions, each query in its nearest partitions "
                   "(settings partitions, partition_probe, partition_spill, partition_products)")
    settings = PARTITIONED_SETTINGS

    def new(self, dim, capacity, partitions=0, partition_probe=PROBE, partition_spill=SPILL,
            partition_products="auto", **settings):
        """``partition_products``: one of PRODUCTS (see :func:`partition_products`)."""
        return PartitionedIndex(dim, capacity, partitions=partitions or None, probe=partition_probe,
                                spill=partition_spill, products=partition_products)


class Auto(IndexKind):
    name = "auto"
    description = (f"exact for groups up to {AUTO_EXACT_MAX:,} images ({AUTO_EXACT_MAX_GPU:,} on a GPU), "
                   "partitioned above")
    settings = PARTITIONED_SETTINGS     # for the groups that get a partitioned index

    def new(self, dim, capacity, **settings):
        if capacity <= AUTO_EXACT_MAX or (capacity <= AUTO_EXACT_MAX_GPU and cuda_available()):
            return exact_index(dim, capacity)
        return Partitioned().new(dim, capacity, **settings)


@curate.hookimpl
def register_indexes(register):
    register(Exact)
    register(Hnsw)
    register(Partitioned)
    register(Auto)
