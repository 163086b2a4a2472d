"""The partitioned index's centroids: spherical k-means on a sample, and each vector's nearest
centroids (its home partitions and the partitions it probes). Which partitions a vector is
filed in and probes is a choice, not a result: whatever it chooses is searched exactly, and its
recall is measured (bench/index_scale.py)."""

from __future__ import annotations

import numpy as np

from curate.plugins.products import Float32Products

CENTROID_PRODUCTS = 1 << 25     # similarities to centroids held at once: 64 MB in bf16 (16,384 vectors x 2,048)


def kmeans(vectors: np.ndarray, k: int, iterations: int = 10, seed: int = 0, products=None,
           labels_of=None) -> np.ndarray:
    """Spherical k-means: ``k`` unit centroids for unit ``vectors`` (an empty cluster is reseeded
    with a random vector); ``products``: how the vectors are compared with the centroids (see
    :func:`nearest_centroids`). ``labels_of(centroids)``: each vector's nearest centroid, where
    something else finds it (Ray tasks, in blocks of :func:`label_block` rows: the same labels);
    the sums and the reseeding stay here, so the centroids are the same either way."""
    rng = np.random.default_rng(seed)
    centroids = vectors[rng.choice(len(vectors), k, replace=False)].copy()
    for _ in range(iterations):
        if labels_of is None:
            labels = nearest_centroids(vectors, centroids, 1, products=products)[:, 0]
        else:
            labels = np.asarray(labels_of(centroids), np.int64)
        order = np.argsort(labels, kind="stable")
        counts = np.bincount(labels, minlength=k)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        full = counts > 0
        sums = np.add.reduceat(vectors[order], starts[full], axis=0)
        centroids[full] = sums
        centroids[~full] = vectors[rng.choice(len(vectors), int((~full).sum()), replace=False)]
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    return centroids


class Centroids:
    """The partitions' centroids (``array``: unit vectors, in partition order) and how a vector
    finds its nearest ones."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def __len__(self):
        return len(self.array)

    @classmethod
    def train(cls, sample: np.ndarray, k: int, products=None, labels_of=None) -> "Centroids":
        """k-means of ``sample`` into ``k`` centroids (``labels_of``: see :func:`kmeans`)."""
        return cls(kmeans(sample, k, products=products, labels_of=labels_of))

    def nearest(self, vectors: np.ndarray, count: int, products=None, block: int | None = None) -> np.ndarray:
        """Each vector's ``count`` most similar centroids (positions, nearest first)."""
        return self.nearest_each(vectors, (count,), products, block)[0]

    def nearest_each(self, vectors: np.ndarray, counts, products=None, block: int | None = None) -> list[np.ndarray]:
        """:meth:`nearest` for each of ``counts`` (a vector's homes and its probes) from one
        comparison: the same choices as one call per count, compared with ``products`` (the
        partitions' own: bf16 where they are bf16; float32 when None). ``block``: vectors
        compared at once (default: CENTROID_PRODUCTS similarities held at once)."""
        products = products or Float32Products()
        block = block or label_block(len(self.array))
        out = [np.empty((len(vectors), count), np.int64) for count in counts]
        for start in range(0, len(vectors), block):
            sims = products.similarities(vectors[start:start + block], self.array)
            for nearest, count in zip(out, counts):
                nearest[start:start + block] = products.nearest(sims, count)
        return out


def label_block(centroids: int) -> int:
    """Vectors compared with ``centroids`` centroids at once: CENTROID_PRODUCTS similarities
    held. Whoever splits the vectors elsewhere (Ray tasks) splits them at multiples of this,
    so that every product has the shape it has here, and so the same float32 results."""
    return max(256, CENTROID_PRODUCTS // max(1, centroids))


def nearest_centroids(vectors: np.ndarray, centroids: np.ndarray, count: int, block: int | None = None,
                      products=None) -> np.ndarray:
    """Each vector's ``count`` most similar of every one of ``centroids`` (k-means' step)."""
    return Centroids(centroids).nearest(vectors, count, products, block)


def grouped(labels: np.ndarray):
    """(label, positions in ``labels`` holding it) for each label present."""
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    for group in np.split(order, bounds):
        yield int(labels[group[0]]), group
