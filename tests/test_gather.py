"""Rows of a vectors array in any order: the same rows from memory and from a file mapping,
read by threads with the mapping's read-ahead off and back on after."""

import mmap

import numpy as np

from curate.gather import THREADED_FROM, file_mapping, gather


def test_gather_from_a_mapped_file_is_numpys_fancy_index(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((20_000, 16), dtype=np.float32)
    path = tmp_path / "vectors.f32"
    vectors.tofile(path)
    mapped = np.memmap(path, np.float32, "r", shape=vectors.shape)
    rows = rng.integers(0, len(vectors), size=3 * THREADED_FROM)          # any order, repeats
    for array in (mapped, np.asarray(mapped), mapped[100:], vectors):
        assert np.array_equal(gather(array, rows[rows < len(array)]), np.asarray(array)[rows[rows < len(array)]])
    assert np.array_equal(gather(mapped, rows[:10]), vectors[rows[:10]])   # few: read directly
    assert np.array_equal(gather(mapped, np.zeros(0, np.int64)), vectors[:0])


def test_file_mapping_is_found_through_views_and_not_for_memory(tmp_path):
    path = tmp_path / "vectors.f32"
    np.zeros((10, 4), np.float32).tofile(path)
    mapped = np.memmap(path, np.float32, "r", shape=(10, 4))
    assert isinstance(file_mapping(mapped), mmap.mmap)
    assert file_mapping(np.asarray(mapped)[2:5]) is file_mapping(mapped)
    assert file_mapping(np.zeros((10, 4), np.float32)) is None
