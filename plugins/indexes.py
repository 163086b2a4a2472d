"""Similarity indexes: ``exact`` (blocked matrix products, the reference), ``partitioned`` (exact
products within k-means partitions) and ``hnsw`` (hnswlib)."""

from __future__ import annotations

import contextlib

import numpy as np

import curate
from curate.settings import Setting
from curate.similarity import IndexKind, SimilarityIndex, similarities

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
PARTITION_SIZE = 250
PROBE = 32
SPILL = 1
SAMPLE_PER_PARTITION = 32
CENTROID_PRODUCTS = 1 << 25     # similarities to centroids held at once: 64 MB in bf16 (16,384 vectors x 2,048)
PARTITION_TRAIN_AT = 20_000


class ExactIndex(SimilarityIndex):
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


def kmeans(vectors: np.ndarray, k: int, iterations: int = 10, seed: int = 0, products=None) -> np.ndarray:
    """Spherical k-means: ``k`` unit centroids for unit ``vectors`` (an empty cluster is reseeded
    with a random vector); ``products``: how the vectors are compared with the centroids (see
    :func:`nearest_centroids`)."""
    rng = np.random.default_rng(seed)
    centroids = vectors[rng.choice(len(vectors), k, replace=False)].copy()
    for _ in range(iterations):
        labels = nearest_centroids(vectors, centroids, 1, products=products)[:, 0]
        order = np.argsort(labels, kind="stable")
        counts = np.bincount(labels, minlength=k)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        full = counts > 0
        sums = np.add.reduceat(vectors[order], starts[full], axis=0)
        centroids[full] = sums
        centroids[~full] = vectors[rng.choice(len(vectors), int((~full).sum()), replace=False)]
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    return centroids


def nearest_centroids(vectors: np.ndarray, centroids: np.ndarray, count: int, block: int | None = None,
                      products=None) -> np.ndarray:
    """Each vector's ``count`` most similar centroids (positions, nearest first), compared with
    ``products`` (the partitions' own: bf16 where they are bf16; float32 when None). Which
    partitions a vector is filed in and probes is a choice, not a result: any choice is
    searched exactly, and its recall is measured (bench/index_scale.py)."""
    return nearest_centroids_each(vectors, centroids, (count,), block, products)[0]


def nearest_centroids_each(vectors: np.ndarray, centroids: np.ndarray, counts, block: int | None = None,
                           products=None) -> list[np.ndarray]:
    """:func:`nearest_centroids` for each of ``counts`` (a vector's homes and its probes) from
    one comparison: the same choices as one call per count. ``block``: vectors compared at
    once (default: CENTROID_PRODUCTS similarities held at once)."""
    products = products or Float32Products()
    block = block or max(256, CENTROID_PRODUCTS // max(1, len(centroids)))
    out = [np.empty((len(vectors), count), np.int64) for count in counts]
    for start in range(0, len(vectors), block):
        sims = products.similarities(vectors[start:start + block], centroids)
        for nearest, count in zip(out, counts):
            nearest[start:start + block] = products.nearest(sims, count)
    return out


def _nearest_first(sims: np.ndarray, count: int) -> np.ndarray:
    """Each row's ``count`` largest columns, largest first."""
    if count == 1:
        return sims.argmax(1)[:, None]
    top = np.argpartition(-sims, count - 1, axis=1)[:, :count]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, 1), axis=1, kind="stable"), 1)


def bfloat16_margin(dim: int) -> float:
    """How far a bf16 product of two unit float32 vectors of ``dim`` components may fall below
    their float32 dot product, with a safety factor: candidates are taken at the threshold
    lowered by this, so that no pair at the threshold is missed.

    bf16 keeps 8 significant bits, so rounding to nearest (torch's conversion) changes each
    component by at most u = 2^-8 of itself: x' = x + dx with |dx_i| <= u |x_i|. Then
    |x'.y' - x.y| <= |dx.y| + |x.dy| + |dx.dy| <= (2u + u^2) sum |x_i y_i| <= 2u + u^2, since
    sum |x_i y_i| <= |x| |y| = 1 (Cauchy-Schwarz). The products of bf16 components are exact
    in float32 and summed in float32 (oneDNN): at most dim * 2^-24 * sum |x'_i y'_i| more, and
    as much again for the float32 product it is compared with (summed in float32 too). The
    sum is rounded to bf16 on output: at most u of its size (<= 1 + the errors above). About
    3u = 0.0118 in all at 768-d; x1.25 for vectors whose norm is a little off 1."""
    u = 2.0 ** -8
    inputs = 2 * u + u * u
    accumulation = 2 * dim * 2.0 ** -24 * (1 + u) ** 2
    output = u * (1 + inputs + accumulation)
    return 1.25 * (inputs + accumulation + output)


def cpu_has_bfloat16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (avx512_bf16 or AMX): elsewhere torch
    emulates it, slower than float32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


class Float32Products:
    """Partitions stored in float32 (numpy) and multiplied in float32: the products are the
    similarities (the partitioned index's way without torch or a bf16 CPU)."""

    exact = True

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(vectors, np.float32)

    def empty(self, rows: int, dim: int) -> np.ndarray:
        return np.zeros((rows, dim), np.float32)

    def threads_for(self, rows: int):
        return contextlib.nullcontext()

    def take(self, encoded: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return encoded[rows]

    def similarities(self, vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
        return np.asarray(vectors, np.float32) @ centroids.T

    def nearest(self, sims: np.ndarray, count: int) -> np.ndarray:
        """Each row's ``count`` largest columns of :meth:`similarities`, largest first."""
        return _nearest_first(sims, count)

    def hits(self, queries, data, threshold: float):
        """(query rows, data rows, similarities) of the products >= ``threshold``."""
        sims = queries @ data.T
        r, c = np.nonzero(sims >= threshold)
        return r, c, sims[r, c]


class Bfloat16Products:
    """Partitions stored in bf16 (torch; half float32's memory) and multiplied in bf16 (about
    twice float32's speed on a CPU with avx512_bf16): the products only propose candidates, at
    the threshold lowered by :func:`bfloat16_margin`; the index rescores them in float32."""

    exact = False
    ENCODE_ROWS = 16384                         # converted at once: 48 MB of float32 at 768-d
    SMALL = 1024

    def __init__(self, dim: int):
        import torch
        self.torch = torch
        self.margin = bfloat16_margin(dim)

    def encode(self, vectors: np.ndarray):
        torch = self.torch
        out = torch.empty((len(vectors), vectors.shape[1]), dtype=torch.bfloat16)
        for start in range(0, len(vectors), self.ENCODE_ROWS):      # a memmap is read a slice at a time
            part = vectors[start:start + self.ENCODE_ROWS]
            if not (type(part) is np.ndarray and part.dtype == np.float32 and part.flags.writeable):
                part = np.array(part, np.float32)                   # torch takes no read-only array
            out[start:start + len(part)] = torch.from_numpy(part)
        return out

    def empty(self, rows: int, dim: int):
        return self.torch.zeros((rows, dim), dtype=self.torch.bfloat16)

    @contextlib.contextmanager
    def threads_for(self, rows: int):
        """One thread for products of fewer than SMALL query rows (the walk's blocks of a large
        index: about 65 rows a partition at 1M): there the threads' start and join cost more than
        they share, most of all on a busy machine."""
        threads = self.torch.get_num_threads()
        if rows < self.SMALL:
            self.torch.set_num_threads(1)
        try:
            yield
        finally:
            self.torch.set_num_threads(threads)

    def take(self, encoded, rows: np.ndarray):
        return encoded.index_select(0, self.torch.from_numpy(rows))

    def similarities(self, vectors: np.ndarray, centroids: np.ndarray):
        """bf16 products with the centroids: at 1M vectors and 4,000 partitions filing and
        probing are 12 TFLOP, a third of float32's time."""
        with self.torch.inference_mode():
            return self.encode(vectors) @ self.encode(np.asarray(centroids, np.float32)).T

    def nearest(self, sims, count: int) -> np.ndarray:
        if count == 1:          # max, not argmax: the same first largest column, 3.5x faster on bf16
            return sims.max(1, keepdim=True).indices.numpy()
        return sims.topk(count, 1, sorted=True).indices.numpy()

    def hits(self, queries, data, threshold: float):
        """(query rows, data rows, None) of the candidates: the products >= ``threshold`` less
        the margin (bf16's products are not the similarities)."""
        torch = self.torch
        low = threshold - self.margin
        with torch.inference_mode():
            sims = queries @ data.T
            hot = torch.nonzero(sims.amax(1).float() >= low)[:, 0]      # rows with a candidate: few
            r, c = torch.nonzero(sims[hot].float() >= low, as_tuple=True)
        return hot[r].numpy(), c.numpy(), None


def partition_products(dim: int, products: str = "auto"):
    """``bfloat16`` where torch is installed and the CPU multiplies bf16 in hardware (``auto``),
    else ``float32``."""
    if products == "auto":
        try:
            import torch  # noqa: F401
        except ImportError:
            return Float32Products()
        products = "bfloat16" if cpu_has_bfloat16() else "float32"
    return Bfloat16Products(dim) if products == "bfloat16" else Float32Products()


class PartitionedIndex(SimilarityIndex):
    """Exact products within partitions: k-means centroids are trained on a sample once the
    index holds ``train_at`` vectors (below that it is the exact index); each vector is stored
    in the partition of its nearest centroid, and each query is compared with every vector of
    its ``probe`` nearest partitions, so that a neighbour across a partition boundary is found
    in the next-closest one. The partitions hold their vectors in bf16 where that is fast
    (``products``: see :func:`partition_products`); the similarities reported are always
    float32 dot products of the vectors given."""

    # Queries encoded at once (bf16: 349,525 at 768-d, about 2,800 per partition of a 1M index at
    # probe 32): fewer, larger products per partition, whose fixed costs then matter less.
    QUERY_CHUNK_BYTES = 512 << 20

    def __init__(self, dim: int, capacity: int, partitions: int | None = None, probe: int = PROBE,
                 spill: int = SPILL, train_at: int = PARTITION_TRAIN_AT, products: str = "auto"):
        self.flat = ExactIndex.over(np.zeros((0, dim), np.float32))   # every vector, in order of addition
        self.partitions = int(partitions or max(1, capacity // PARTITION_SIZE))
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
        sample = vectors[np.sort(rng.choice(len(vectors), min(len(vectors), SAMPLE_PER_PARTITION * self.partitions),
                                            replace=False))]
        dim = vectors.shape[1]
        self.products = partition_products(dim, self.products_kind)
        self.centroids = kmeans(sample, self.partitions, products=self.products)
        self.members = [np.zeros(0, np.int64) for _ in range(self.partitions)]
        self.data = [self.products.empty(0, dim) for _ in range(self.partitions)]
        self._file(np.arange(len(vectors)))

    def _file(self, positions: np.ndarray):
        """Store vectors (by position) in their ``spill`` nearest partitions, and note the
        ``probe`` nearest, which they search as queries (the walk's and a self-join's queries
        are the vectors held: one comparison with the centroids serves both)."""
        homes, probes = [], []
        for chunk in np.array_split(positions, max(1, len(positions) // 16384)):
            nearest = nearest_centroids_each(self.flat.data[chunk], self.centroids, (self.spill, self.probe),
                                             products=self.products)
            homes.append(nearest[0])
            probes.append(nearest[1].astype(np.int32))
        if len(self.probes) < len(self.flat):
            grown = np.zeros((len(self.flat), self.probe), np.int32)
            grown[:len(self.probes)] = self.probes
            self.probes = grown
        self.probes[positions] = np.concatenate(probes)
        for p, group in _grouped(np.concatenate(homes).ravel()):
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
        """(partition, rows of ``queries`` that probe it, their probe slot) for each partition
        probed; ``first``: the queries are the vectors held at ``first``, ``first + 1``, ...,
        whose probes were found when they were filed."""
        self.ready()
        if first is not None:
            probes = self.probes[first:first + len(queries)]
        else:
            probes = nearest_centroids(queries, self.centroids, self.probe, products=self.products)
        flat = probes.ravel()
        for p, group in _grouped(flat):
            if self.counts[p]:
                yield p, group // self.probe, group % self.probe

    def _float32(self, p: int) -> np.ndarray:
        """Partition ``p``'s vectors in float32."""
        if self.products.exact:
            return self.data[p][:self.counts[p]]
        return self.flat.data[self.members[p][:self.counts[p]]]

    def search(self, queries, k):
        """Top-k by float32 products within the probed partitions."""
        if self.untrained:
            return self.flat.search(queries, k)
        cand_sims = np.full((len(queries), self.probe * k), -np.inf, np.float32)
        cand_ids = np.full((len(queries), self.probe * k), -1, np.int64)
        for p, rows, slots in self._probed(queries):
            sims = queries[rows] @ self._float32(p).T
            take = min(k, sims.shape[1])
            top = np.argpartition(-sims, take - 1, axis=1)[:, :take] if take < sims.shape[1] \
                else np.broadcast_to(np.arange(take), sims.shape)
            columns = slots[:, None] * k + np.arange(take)
            cand_sims[rows[:, None], columns] = np.take_along_axis(sims, top, 1)
            cand_ids[rows[:, None], columns] = self.members[p][top]
        if self.spill > 1:                            # a vector stored twice counts once
            by_id = np.argsort(cand_ids, axis=1, kind="stable")
            ids_sorted = np.take_along_axis(cand_ids, by_id, 1)
            repeat = np.zeros_like(cand_ids, bool)
            repeat[:, 1:] = (ids_sorted[:, 1:] == ids_sorted[:, :-1]) & (ids_sorted[:, 1:] >= 0)
            np.put_along_axis(cand_sims, by_id, np.where(repeat, -np.inf, np.take_along_axis(cand_sims, by_id, 1)), 1)
        order = np.argsort(-cand_sims, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(cand_sims, order, 1), np.take_along_axis(cand_ids, order, 1)

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
        there are more than ``limit``; ``first``: as :meth:`_probed`'s."""
        rows_out, ids_out, sims_out = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.float32)]
        encoded = self.products.encode(queries)
        count = 0
        with self.products.threads_for(len(queries) * self.probe // self.partitions):
            for p, rows, ids, sims in self._partition_hits(queries, encoded, threshold, alive, first):
                rows_out.append(rows + q0)
                ids_out.append(ids)
                sims_out.append(sims)
                count += len(rows)
                if limit is not None and count > limit:
                    return None
        return np.concatenate(rows_out), np.concatenate(ids_out), np.concatenate(sims_out)

    def _partition_hits(self, queries, encoded, threshold: float, alive=None, first=None):
        """(partition, rows, ids, similarities) of the pairs >= ``threshold`` in each probed partition."""
        for p, rows, _ in self._probed(queries, first):
            members = self.members[p][:self.counts[p]]
            for start in range(0, len(rows), _BLOCK):
                chunk = rows[start:start + _BLOCK]
                r, c, sims = self.products.hits(self.products.take(encoded, chunk), self.data[p][:self.counts[p]],
                                                threshold)
                r, ids = chunk[r], members[c]
                if alive is not None:
                    keep = alive[ids]
                    r, ids = r[keep], ids[keep]
                    sims = None if sims is None else sims[keep]
                if sims is None:                      # candidates: their float32 products decide
                    sims = similarities(queries[r], self.flat.data[ids])
                    keep = sims >= threshold
                    r, ids, sims = r[keep], ids[keep], sims[keep]
                yield p, r, ids, sims


def _grouped(labels: np.ndarray):
    """(label, positions in ``labels`` holding it) for each label present."""
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    for group in np.split(order, bounds):
        yield int(labels[group[0]]), group


PARTITIONED_SETTINGS = (
    Setting("partitions", int, 0, minimum=0, maximum=10_000_000,
            help=f"Partitioned index: k-means partitions (0: one per {PARTITION_SIZE:,} vectors)."),
    Setting("partition_probe", int, PROBE, minimum=1, maximum=10_000,
            help="Partitioned index: the nearest partitions each query is compared with."),
    Setting("partition_spill", int, SPILL, minimum=1, maximum=64,
            help="Partitioned index: the nearest partitions each vector is stored in."),
)


class Partitioned(IndexKind):
    name = "partitioned"
    description = ("exact products within k-means partitions, each query in its nearest partitions "
                   "(settings partitions, partition_probe, partition_spill)")
    settings = PARTITIONED_SETTINGS

    def new(self, dim, capacity, partitions=0, partition_probe=PROBE, partition_spill=SPILL, products="auto",
            **settings):
        """``products``: ``auto``, ``bfloat16`` or ``float32`` (see :func:`partition_products`)."""
        return PartitionedIndex(dim, capacity, partitions=partitions or None, probe=partition_probe,
                                spill=partition_spill, products=products)


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
