"""How the partitioned index multiplies: its partitions stored and multiplied in float32
(numpy), stored in float16 and multiplied in float32 (numpy: half the memory), or stored and
multiplied in bf16 (torch, on a CPU that multiplies bf16 in hardware), and the margins that
make rounded products safe to propose candidates with."""

from __future__ import annotations

import contextlib
import math
import os

import numpy as np


def nearest_first(sims: np.ndarray, count: int) -> np.ndarray:
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


def float16_margin(dim: int) -> float:
    """How far a float32 query's product with a float16-rounded unit vector may fall below its
    float32 dot product, with a safety factor (see :func:`bfloat16_margin`).

    Only the stored side is rounded: |dy_i| <= u |y_i| + 2^-25 with u = 2^-11 (the second term
    for components below float16's smallest normal, 2^-14, whose spacing is 2^-24), so
    |x.y' - x.y| <= u + sqrt(dim) 2^-25 for unit x and y (Cauchy-Schwarz). The float32 sums of
    both products add at most dim * 2^-24 each. About 0.00058 at 768-d, 0.00073 with the x1.25 of bf16's."""
    u = 2.0 ** -11
    rounding = u * (1 + u) + math.sqrt(dim) * 2.0 ** -25
    accumulation = 2 * dim * 2.0 ** -24 * (1 + u) ** 2
    return 1.25 * (rounding + accumulation)


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

    def operand(self, stored: np.ndarray) -> np.ndarray:
        """A partition's stored vectors as :meth:`hits` multiplies them (once per visit)."""
        return stored

    def similarities(self, vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
        return np.asarray(vectors, np.float32) @ centroids.T

    def nearest(self, sims: np.ndarray, count: int) -> np.ndarray:
        """Each row's ``count`` largest columns of :meth:`similarities`, largest first."""
        return nearest_first(sims, count)

    def hits(self, queries, data, threshold: float):
        """(query rows, data rows, similarities) of the products >= ``threshold``."""
        sims = queries @ data.T
        r, c = np.nonzero(sims >= threshold)
        return r, c, sims[r, c]


class Float16Products(Float32Products):
    """Partitions stored in float16 (numpy: half float32's memory), each turned back into float32
    once per visit and multiplied in float32 with the float32 queries: for CPUs without bf16 in
    hardware, where torch's bf16 products are about 8x slower than float32's. The products only
    propose candidates, at the threshold lowered by :func:`float16_margin`; the index rescores
    them in float32. Queries and centroids stay float32, so the partitions and probes are
    float32's and so are the pairs found."""

    exact = False

    def __init__(self, dim: int):
        self.margin = float16_margin(dim)

    def empty(self, rows: int, dim: int) -> np.ndarray:
        return np.zeros((rows, dim), np.float16)     # float32 rows assigned to it are rounded to nearest

    def operand(self, stored: np.ndarray) -> np.ndarray:
        return stored.astype(np.float32)

    def hits(self, queries, data, threshold: float):
        """(query rows, data rows, None) of the candidates: the products >= ``threshold`` less
        the margin."""
        r, c = np.nonzero(queries @ data.T >= threshold - self.margin)
        return r, c, None


ONEDNN_CACHE = 64             # oneDNN's compiled products kept (its default: 1,024)


class Bfloat16Products:
    """Partitions stored in bf16 (torch; half float32's memory) and multiplied in bf16 (about
    twice float32's speed on a CPU with avx512_bf16): the products only propose candidates, at
    the threshold lowered by :func:`bfloat16_margin`; the index rescores them in float32."""

    exact = False
    ENCODE_ROWS = 16384                         # converted at once: 48 MB of float32 at 768-d
    SMALL = 1024

    def __init__(self, dim: int):
        # oneDNN keeps up to 1,024 compiled products, one per shape; the walk's products come in
        # thousands of shapes (each partition's queries x members), which kept about 1 GB at 200K
        # vectors (bench/README.md, "A run's vectors mapped from a file"). oneDNN reads this when
        # it first compiles one, so it bounds that where nothing multiplied with torch on the CPU
        # before (the default runtimes: ONNX Runtime on the CPU, CUDA); a user's value stands.
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_CACHE))
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

    def operand(self, stored):
        return stored

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


PRODUCTS = ("auto", "float32", "float16", "bfloat16")


def partition_products(dim: int, products: str = "auto"):
    """``bfloat16`` where torch is installed and the CPU multiplies bf16 in hardware (``auto``),
    else ``float32``; ``float16`` when asked for (half float32's memory, at 1.16x its time on 1M
    vectors: the rescoring of candidates that float32's exact products do not need)."""
    if products == "auto":
        try:
            import torch  # noqa: F401
        except ImportError:
            return Float32Products()
        products = "bfloat16" if cpu_has_bfloat16() else "float32"
    if products == "bfloat16":
        return Bfloat16Products(dim)
    return Float16Products(dim) if products == "float16" else Float32Products()
