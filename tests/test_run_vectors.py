"""A run's vectors past HELD_MAX bytes live in a map of an unnamed file in the cache folder, so
a run of millions of images holds the rows it uses, not every vector: the same decisions as in
memory, the caches read a part at a time, and nothing left on disk."""

import numpy as np
import pytest

import curate
from curate import embedding, vectors_file, vectors_out
from curate.gather import rows_of
from curate.vectors_file import run_vectors, written
from curate.vectors_out import export_embeddings
from conftest import FIXTURES

IMAGES = FIXTURES / "images"


def test_in_memory_up_to_the_limit_and_mapped_from_an_unnamed_file_above(tmp_path, monkeypatch):
    held = run_vectors(10, 4, tmp_path)
    assert type(held) is np.ndarray and held.shape == (10, 4) and not held.any()
    monkeypatch.setattr(vectors_file, "HELD_MAX", 10 * 4 * 4 - 1)
    mapped = run_vectors(10, 4, tmp_path)
    assert isinstance(mapped, np.memmap) and mapped.dtype == np.float32 and mapped.shape == (10, 4)
    assert not mapped.any()
    mapped[3] = 0.5
    assert mapped[3].sum() == 2.0 and mapped.sum() == 2.0
    assert list(tmp_path.iterdir()) == []            # no name: nothing for any ending to leave behind


def test_a_folder_that_cannot_hold_the_file_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(vectors_file, "HELD_MAX", 0)
    with pytest.raises(curate.CurateError, match=r"missing: cannot make the file for 10 vectors of 4"):
        run_vectors(10, 4, tmp_path / "missing")


def test_a_groups_rows_are_a_view_when_they_are_one_run_and_gathered_otherwise(tmp_path):
    array = np.arange(40, dtype=np.float32).reshape(10, 4)
    for members in (np.arange(3, 8), np.array([0])):
        view = rows_of(array, members)
        assert np.shares_memory(view, array) and np.array_equal(view, array[members])
    for members in ([1, 2, 5], [4, 5, 6, 9], []):
        members = np.array(members, np.int64)
        taken = rows_of(array, members)
        assert not np.shares_memory(taken, array) and np.array_equal(taken, array[members])
    array.tofile(tmp_path / "v.f32")
    mapped = np.memmap(tmp_path / "v.f32", np.float32, "r", shape=(10, 4))
    assert isinstance(rows_of(mapped, np.arange(10)), np.memmap)


def test_a_work_file_is_written_a_part_at_a_time_from_a_mapped_array(tmp_path, monkeypatch):
    monkeypatch.setattr(vectors_file, "WRITE_ROWS", 3)
    vectors = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    vectors.tofile(tmp_path / "v.f32")
    mapped = np.memmap(tmp_path / "v.f32", np.float32, "r", shape=(10, 4))
    (tmp_path / "work").mkdir()
    source = written(mapped[2:9], tmp_path / "work")
    assert np.array_equal(np.fromfile(source.path, np.float32).reshape(-1, 4), vectors[2:9])
    assert np.array_equal(source.rows, np.arange(7))


def decide(tmp_path, cache: str):
    inputs = curate.Inputs([FIXTURES / "dedup_demo.json"], image_root=IMAGES)
    return curate.identify_duplicates(inputs, curate.EmbedderSpec("timm-pool"),
                                      curate.SearchSettings(thresholds=(0.9, 0.7)),
                                      curate.EmbedSettings(cache_dir=tmp_path / cache))


@pytest.mark.slow
def test_dedup_with_mapped_vectors_decides_as_in_memory_embedded_and_from_the_cache(tmp_path, monkeypatch):
    held = decide(tmp_path, "held")
    assert type(held.found.result.vectors) is np.ndarray
    monkeypatch.setattr(vectors_file, "HELD_MAX", 0)
    monkeypatch.setattr(embedding, "LOOKUP_ROWS", 2)            # the caches read two images at a time
    for run in ("embedded", "cached"):
        mapped = decide(tmp_path, "mapped")
        result = mapped.found.result
        assert isinstance(result.vectors, np.memmap), run
        assert all(isinstance(fingerprints, np.memmap) for fingerprints in result.signals.values()), run
        assert (result.embedded, result.cached) == ((13, 0) if run == "embedded" else (0, 13))
        assert np.array_equal(result.vectors, held.found.result.vectors)
        for ours, theirs in zip(mapped.thresholds, held.thresholds):
            assert np.array_equal(ours.duplicate_of, theirs.duplicate_of), run
            assert np.array_equal(ours.score, theirs.score), run
        assert (ours.duplicate_of >= 0).any()                   # something was removed: the test can fail
        cache_folder = next((tmp_path / "mapped").iterdir())
        assert not [p for p in cache_folder.iterdir() if p.name.startswith(".curate-")]


@pytest.mark.slow
def test_export_reads_and_writes_the_vectors_a_part_at_a_time(tmp_path, monkeypatch):
    import pyarrow.parquet as pq
    found = decide(tmp_path, "cache").found
    monkeypatch.setattr(vectors_out, "EXPORT_ROWS", 4)
    rows = np.flatnonzero(found.result.ok)
    assert export_embeddings(found, tmp_path / "v.npy") == export_embeddings(found, tmp_path / "v.parquet") == 13
    assert np.array_equal(np.load(tmp_path / "v.npy"), found.result.vectors[rows])
    parquet = pq.ParquetFile(tmp_path / "v.parquet")
    assert parquet.metadata.num_row_groups == 4                                  # 13 rows, 4 at a time
    table = parquet.read().to_pylist()
    assert np.array_equal(np.array([row["vector"] for row in table], np.float32), found.result.vectors[rows])
    assert [row["image"] for row in table] == [found.images.paths[i] for i in rows]
