"""Issue #12: several signals, one decision; the embedder's own default threshold; whole-image
preprocessing. Real model (EfficientNet-Lite0, offline) on the fixture photos."""

import json
import shutil
import types

import numpy as np
import pytest
from PIL import Image

import curate
from conftest import FIXTURES, assert_one_line_error, load_json, run_curate

pytestmark = pytest.mark.slow

PHOTOS = FIXTURES / "images"
TURNS = [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A photo."}]


@pytest.fixture
def photo_root(tmp_path):
    """Two distinct photos; a byte copy of the first under another name; a 25% downscale of the second."""
    root = tmp_path / "img"
    shutil.copytree(PHOTOS / "coco", root / "coco")
    first, second = "coco/train2017/000000000001.jpg", "coco/train2017/000000000003.jpg"
    shutil.copy(root / first, root / "coco" / "copy.jpg")
    with Image.open(root / second) as image:
        image.resize((image.width // 4, image.height // 4), Image.Resampling.BICUBIC).save(root / "coco" / "small.png")
    names = [first, second, "coco/copy.jpg", "coco/small.png"]
    records = [{"id": f"r{i}", "image": name, "conversations": TURNS} for i, name in enumerate(names)]
    data = tmp_path / "in.json"
    data.write_text(json.dumps(records))
    return data, root


def removed_by_id(out):
    return {row["id"]: row for row in load_json(out.parent / (out.name + ".report") / "removed.jsonl")}


def test_each_removal_says_which_signal_fired(tmp_path, photo_root):
    data, root = photo_root
    out = tmp_path / "o.json"
    # the hash signals first, so that they are the ones recorded where the embedding agrees
    run_curate("dedup", data, "-o", out, "--image-root", root, "--embedder", "timm-pool", "--no-cache", "-q",
               "--signals", "exact,phash,embedding", "-t", "0.99", check=0)
    removed = removed_by_id(out)
    assert set(removed) == {"r2", "r3"}
    assert removed["r2"]["signal"] == "exact" and removed["r2"]["score"] == 1.0
    assert removed["r2"]["duplicate_of"] == "coco/train2017/000000000001.jpg"
    assert removed["r3"]["signal"] == "phash" and 0 <= removed["r3"]["distance"] <= 10
    assert removed["r3"]["duplicate_of"] == "coco/train2017/000000000003.jpg"
    report = load_json(out.parent / "o.json.report" / "report.json")
    assert report["settings"]["signals"] == ["exact", "phash", "embedding"]


def test_embedding_alone_misses_what_the_hashes_find(tmp_path, photo_root):
    data, root = photo_root
    out = tmp_path / "o.json"
    run_curate("dedup", data, "-o", out, "--image-root", root, "--embedder", "timm-pool", "--no-cache", "-q",
               "--signals", "embedding", "-t", "0.9999", check=0)
    assert set(removed_by_id(out)) <= {"r2"}       # only a byte copy can reach 0.9999
    assert len(load_json(out)) >= 3


def test_signal_thresholds_and_bad_signal_settings(tmp_path, photo_root):
    data, root = photo_root
    common = ["--image-root", root, "--embedder", "timm-pool", "--no-cache", "-q", "-t", "0.9999"]
    out = tmp_path / "o.json"
    for distance in (0, 3):
        run_curate("dedup", data, "-o", out, *common, "--signals", f"phash={distance},embedding", "--overwrite",
                   check=0)
        by_phash = [r for r in removed_by_id(out).values() if r["signal"] == "phash"]
        assert by_phash and all(r["distance"] <= distance for r in by_phash)
    for signals, fragment in [("exact,phash", "must name embedding"), ("embedding,nope", "nope"),
                              ("embedding,phash=x", "not a number"), ("embedding,phash=99", "Hamming distance"),
                              ("embedding=0.5", "--threshold"), ("embedding,exact,exact", "twice")]:
        result = run_curate("dedup", data, "-o", tmp_path / "bad.json", *common, "--signals", signals)
        assert_one_line_error(result, fragment)
        assert not (tmp_path / "bad.json").exists()


def test_each_embedder_has_its_own_default_threshold(tmp_path, photo_root):
    data, root = photo_root
    out = tmp_path / "o.json"
    run_curate("dedup", data, "-o", out, "--image-root", root, "--embedder", "timm-pool", "--no-cache", "-q", check=0)
    assert load_json(out.parent / "o.json.report" / "report.json")["settings"]["thresholds"] == [0.8]
    model = curate.EmbedderSpec("timm-pool").load()
    assert model.default_threshold == 0.8 and model.size == 160
    assert curate.SearchSettings().with_model_default(types.SimpleNamespace(default_threshold=None)).thresholds == (0.9,)
    assert curate.SearchSettings((0.7,)).with_model_default(model).thresholds == (0.7,)


def test_signals_are_cached_with_the_vectors(tmp_path, photo_root):
    data, root = photo_root
    common = ["--image-root", root, "--embedder", "timm-pool", "--cache", tmp_path / "cache", "-q"]
    run_curate("embed", data, *common, check=0)                 # embed fills every default signal's cache
    out = tmp_path / "o.json"
    run_curate("dedup", data, "-o", out, *common, check=0)
    report = load_json(out.parent / "o.json.report" / "report.json")
    assert report["embedding"]["embedded"] == 0 and report["embedding"]["cached"] == 4
    assert set(removed_by_id(out)) == {"r2", "r3"}


class Everything(curate.Signal):
    """A third-party signal that calls every pair a duplicate."""

    name = "everything"
    description = "every image looks alike"
    dim = 4

    def fingerprint(self, image, path):
        return np.array([1, 0, 0, 0], np.float32)


def test_a_third_party_signal_plugs_in_like_the_bundled_ones(registry_with, tmp_path, photo_root):
    data, root = photo_root
    plugin = types.SimpleNamespace(register_signals=curate.hookimpl(lambda register: register(Everything)))
    registry_with(plugin)
    out = tmp_path / "o.json"
    run_curate("dedup", data, "-o", out, "--image-root", root, "--embedder", "timm-pool", "--no-cache", "-q",
               "--signals", "everything,embedding", "--verify", "none", check=0)
    removed = removed_by_id(out)
    assert set(removed) == {"r1", "r2", "r3"} and {r["signal"] for r in removed.values()} == {"everything"}
    assert len(load_json(out)) == 1
    listing = run_curate("plugins", check=0).stdout
    assert "everything" in listing


def test_whole_image_preprocessing_keeps_every_part_and_trims_bars():
    from curate.preprocess import WholeImage, content_box
    photo = Image.open(PHOTOS / "coco/train2017/000000000001.jpg").convert("RGB")
    letterboxed = Image.new("RGB", (photo.width + 200, photo.height + 80), (0, 0, 0))
    letterboxed.paste(photo, (100, 40))
    left, top, right, bottom = content_box(letterboxed)
    assert abs(left - 100) <= 2 and abs(top - 40) <= 2
    assert abs(right - (100 + photo.width)) <= 2 and abs(bottom - (40 + photo.height)) <= 2
    prepare = WholeImage(160)
    a, b = prepare(photo).astype(np.float32), prepare(letterboxed).astype(np.float32)
    assert a.shape == (3, 160, 160) and np.abs(a - b).mean() < 4      # the bars are gone
    wide = Image.new("RGB", (1000, 100), (0, 0, 0))
    wide.paste(Image.new("RGB", (50, 100), (255, 0, 0)), (950, 0))  # content at the far right edge
    assert prepare(wide)[0].max() == 255                              # a centre crop would have lost it
    assert prepare(Image.new("RGB", (1, 100000), (9, 9, 9))).shape == (3, 160, 160)   # bounded output
