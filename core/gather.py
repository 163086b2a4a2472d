"""Rows of a vectors array taken in any order: the pairs' rescoring, a k-means sample.

In memory that is numpy's fancy index. From a memory-mapped file (the cache's vectors: 31 GB
at 10M x 768, more than the machine's memory) each row out of order is a read that waits on
the disk, and the kernel's read-ahead makes it read 128 KB for a 3 KB row. So rows of a
mapped array are read in file order with the mapping's read-ahead off, by THREADS threads at
once (numpy copies without the GIL): cold from this machine's disk, 43,000 rows a second
against 8,200 on one thread and 930 with read-ahead on (bench/README.md, "10M").
"""

from __future__ import annotations

import mmap
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

THREADS = 16
THREADED_FROM = 2048          # rows: fewer are read on the calling thread
_ADVICE = threading.Lock()    # the read-ahead is the mapping's: one gather switches it at a time


def gather(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``array[rows]`` (``rows`` in any order, repeats allowed)."""
    mapping = file_mapping(array)
    if mapping is None or len(rows) < THREADED_FROM:
        return array[rows]
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows),) + array.shape[1:], array.dtype)

    def read(part):
        out[part] = array[rows[part]]

    with _ADVICE, ThreadPoolExecutor(THREADS) as pool:
        mapping.madvise(mmap.MADV_RANDOM)
        try:
            list(pool.map(read, np.array_split(order, 4 * THREADS)))
        finally:
            mapping.madvise(mmap.MADV_NORMAL)
    return out


def rows_of(array: np.ndarray, members: np.ndarray) -> np.ndarray:
    """``array[members]`` for a group's members (ascending): a view when they are one run of
    rows (a group that is the whole run, the common case), so a mapped array stays mapped
    and nothing is copied; else the rows gathered."""
    members = np.asarray(members)
    if len(members) and members[-1] - members[0] + 1 == len(members) and (np.diff(members) == 1).all():
        return array[int(members[0]):int(members[-1]) + 1]
    return gather(array, members)


def file_mapping(array: np.ndarray) -> mmap.mmap | None:
    """The file mapping ``array`` reads from (a ``np.memmap`` or a view of one), else None."""
    while array is not None:
        mapping = getattr(array, "_mmap", None)
        if isinstance(mapping, mmap.mmap):
            return mapping
        array = array.base if isinstance(array, np.ndarray) else None
    return None
