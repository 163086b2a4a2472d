"""Vectors on disk: a run's vectors once they are too many to hold (:func:`run_vectors`), and
for searches in other processes (``--engine ray``) a file of float32 rows (the embedding cache's
``vectors.f32``, or a work file the driver writes) and which of its rows are a channel's
vectors. A task reads only the rows it needs, through a memory map."""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import TEMPORARIES, _remove
from .errors import CurateError
from .gather import gather
from .interrupts import signals_held

# Rows read through one mapping: pages touched are let go after each chunk, so a reader's memory
# is the rows it keeps (a 768-d row is 3 KB: 8192 rows map at most 48 MB of the file at once).
READ_CHUNK = 8192
# A run's vectors up to this many bytes are held in memory; more live in a file-backed map.
HELD_MAX = 1 << 30
WRITE_ROWS = 65_536           # rows copied at a time into a work file


def run_vectors(n: int, dim: int, folder: Path | None = None) -> np.ndarray:
    """An (n, dim) float32 array of zeros for a run's vectors. Up to ``HELD_MAX`` bytes it is in
    memory; above, a map of an unnamed file in ``folder`` (the cache folder; None: the system's
    temporary folder): its pages are the kernel's to write back and let go, so at 10M images a
    run holds the rows it is using, not 31 GB of vectors. The file has no name from the start,
    so it goes with the process however that ends (``kill -9`` included)."""
    if n * dim * 4 <= HELD_MAX:
        return np.zeros((n, dim), np.float32)
    try:
        backing = tempfile.TemporaryFile(prefix=".curate-vectors-", dir=folder)
        return np.memmap(backing, dtype=np.float32, mode="w+", shape=(n, dim))
    except OSError as e:
        where = folder or tempfile.gettempdir()
        raise CurateError(f"{where}: cannot make the file for {n:,} vectors of {dim} "
                          f"({n * dim * 4 / 2**30:.1f} GiB): {e.strerror}") from None


@dataclass(frozen=True)
class VectorsFile:
    """A channel's vectors in ``path`` (float32 rows of ``dim``): the channel's vector i is the
    file's row ``rows[i]``."""

    path: Path
    rows: np.ndarray
    dim: int

    def file_rows(self, positions: np.ndarray) -> np.ndarray:
        """The file's rows of the channel's ``positions``: what a task needs to read them."""
        return self.rows[positions]


def read_rows(path: Path, dim: int, rows: np.ndarray) -> np.ndarray:
    """Rows of a float32 file (any order, repeats allowed), in file order a chunk at a time."""
    rows = np.asarray(rows, np.int64)
    out = np.empty((len(rows), dim), np.float32)
    if not len(rows):
        return out
    try:
        count = Path(path).stat().st_size // (4 * dim)
    except OSError as e:
        raise CurateError(f"{path}: cannot read the vectors ({e.strerror}); with --engine ray on a cluster, "
                          "--cache must be on a path every node sees") from None
    if rows.max() >= count:
        raise CurateError(f"{path}: holds {count:,} vectors, row {int(rows.max()):,} was asked for "
                          "(was the cache changed during the run?)")
    order = np.argsort(rows, kind="stable")
    for start in range(0, len(order), READ_CHUNK):
        chunk = order[start:start + READ_CHUNK]
        mapped = np.memmap(path, dtype=np.float32, mode="r", shape=(count, dim))
        out[chunk] = gather(mapped, rows[chunk])     # out of order: read by threads (curate.gather)
        del mapped                                   # unmapped: its pages leave this process
    return out


def written(vectors: np.ndarray, folder: Path) -> VectorsFile:
    """``vectors`` written once to a float32 file in ``folder``."""
    path = Path(folder) / "vectors.f32"
    with open(path, "wb") as stream:              # a part at a time: ``vectors`` may be a map of a file
        for start in range(0, len(vectors), WRITE_ROWS):
            np.ascontiguousarray(vectors[start:start + WRITE_ROWS], np.float32).tofile(stream)
    return VectorsFile(path, np.arange(len(vectors), dtype=np.int64), vectors.shape[1])


@contextmanager
def work_folder(root: Path | None):
    """A folder for the files of one search, in ``root`` (the cache folder, on a path Ray's
    workers see; None: the system's temporary folder, seen by a local Ray only), removed at
    the end, an interruption included."""
    with signals_held():       # a signal between creating the folder and recording it would orphan it
        try:
            folder = Path(tempfile.mkdtemp(prefix=".curate-search-", dir=root))
        except OSError as e:
            raise CurateError(f"{root}: cannot write the search's work files ({e.strerror})") from None
        TEMPORARIES.add(folder)                       # removed by the exit after an interruption
    try:
        yield folder
    finally:
        _remove(folder)
