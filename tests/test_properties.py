"""Property tests: random Samples survive every lossless reader/writer pair; the exact index's
keep/remove walk keeps its promises on random vectors."""

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

import curate
from curate.registry import get_registry
from curate.similarity import keep_or_remove

TEXT = st.text(st.characters(blacklist_characters="<[", blacklist_categories=("Cs",)), max_size=40)
KEY = st.text(st.characters(whitelist_categories=("Ll",)), min_size=1, max_size=8).filter(
    lambda k: k not in {"id", "image", "conversations", "messages", "images"})
JSON_VALUE = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | TEXT,
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEY, inner, max_size=3),
                          max_leaves=6)
PATH = st.from_regex(r"[a-z]{1,8}/[a-z0-9_]{1,12}\.jpg", fullmatch=True)


@st.composite
def samples(draw):
    image = draw(st.none() | PATH | st.lists(PATH, min_size=2, max_size=3, unique=True))
    count = 0 if image is None else 1 if isinstance(image, str) else len(image)
    pairs = draw(st.integers(1, 3))
    turns = []
    for k in range(pairs):
        question = draw(TEXT)
        if k == 0 and count:
            question = "<image>\n" * count + question
        turns += [curate.Turn("human", question), curate.Turn("gpt", draw(TEXT))]
    sample_id = draw(st.integers(0, 10**9) | st.text(st.characters(blacklist_categories=("Cs",)), min_size=1,
                                                             max_size=12))
    return curate.Sample(sample_id, image, turns, draw(st.dictionaries(KEY, JSON_VALUE, max_size=3)))


LOSSLESS = [("llava", ".json"), ("llava", ".jsonl"), ("sharegpt4v", ".json"), ("internvl", ".jsonl"),
            ("llama-factory", ".json"), ("llama-factory", ".jsonl")]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(samples(), min_size=0, max_size=6))
def test_random_samples_round_trip_through_every_lossless_format(batch):
    with tempfile.TemporaryDirectory() as folder:
        for name, suffix in LOSSLESS:
            path = Path(folder) / f"{name}{suffix}"
            assert curate.write(batch, path, name, ids="keep") == len(batch)   # the formats' own, not the trainers' default
            back = list(curate.read(path, name))
            assert back == batch, name


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 80), st.integers(2, 12), st.floats(0.5, 0.99), st.integers(0, 2**31 - 1))
def test_exact_walk_invariants_on_random_vectors(n, dim, threshold, seed):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors[rng.integers(0, n, n // 3)] = vectors[0]          # plant exact duplicates
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    walk = keep_or_remove(vectors, get_registry().get("index", "exact"), threshold, block=7)
    kept = np.flatnonzero(walk.kept)
    sims = vectors @ vectors.T
    off_diagonal = sims[np.ix_(kept, kept)] - 3 * np.eye(len(kept))
    assert off_diagonal.max(initial=-1) < threshold
    for i in np.flatnonzero(~walk.kept):
        j = walk.duplicate_of[i]
        assert walk.kept[j] and j < i and sims[i, j] >= threshold - 1e-6
    assert walk.kept[0]
