"""Issue #27: the cache trusts nothing it reads back. Key rows that are not [path, size,
mtime, check] are ignored (their images embedded again) with one warning; a cache file that
is a symbolic link is a one-line error naming it, and its target is never touched."""

import json

import numpy as np
import pytest

import curate
from curate.cache import CacheIdentity, EmbeddingCache

DIM = 4


def open_cache(root):
    return EmbeddingCache(root, CacheIdentity("test", "model", "digest", DIM))


def unit_rows(n):
    return np.eye(DIM, dtype=np.float32)[np.arange(n) % DIM]


def keys(n):
    return [(f"/images/{i}.jpg", 100 + i, 1000 + i) for i in range(n)]


def filled_cache(root, n=4):
    with open_cache(root) as cache:
        cache.append(keys(n), unit_rows(n))
        return cache.keys_path


def test_key_rows_that_are_not_keys_are_ignored_and_embedded_again(tmp_path):
    keys_path = filled_cache(tmp_path)
    lines = keys_path.read_text().splitlines()
    row = json.loads(lines[1])
    lines[1] = json.dumps([[row[0]], *row[1:]])          # the path is a list
    lines[2] = "not json"
    keys_path.write_text("\n".join(lines) + "\n")
    with open_cache(tmp_path) as cache:
        assert cache.warnings == [f"{keys_path}: 2 rows are not [path, size, mtime, check]; "
                                  "ignored, and their images embedded again"]
        found = cache.lookup(keys(4))
        assert sorted(found) == [0, 3]
        vectors, good = cache.read_verified(list(found.values()))
        assert good.all() and np.array_equal(vectors, unit_rows(4)[[0, 3]])
        cache.append(keys(4)[1:3], unit_rows(4)[1:3])      # embedded again
    with open_cache(tmp_path) as cache:
        assert cache.warnings == []                        # said once
        found = cache.lookup(keys(4))
        vectors, good = cache.read_verified([found[i] for i in range(4)])
        assert good.all() and np.array_equal(vectors, unit_rows(4))


@pytest.mark.parametrize("name", ["keys.jsonl", "vectors.f32", "meta.json", "lock"])
def test_a_cache_file_that_is_a_link_is_an_error_and_its_target_untouched(tmp_path, name):
    filled_cache(tmp_path / "cache")
    folder = next((tmp_path / "cache").iterdir())
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (folder / name).unlink()
    (folder / name).symlink_to(victim)
    with pytest.raises(curate.CurateError, match=f"{name}: the cache file is a symbolic link") as error:
        open_cache(tmp_path / "cache")
    assert "\n" not in str(error.value)
    assert victim.read_text() == "precious\n"
