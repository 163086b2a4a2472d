"""`curate dedup --filter` (#26 item 3): filters run before the duplicate filter, their removals
in the same removed.jsonl and report, and image filters measure the image decoded for the
embedder instead of decoding it again."""

import json
import shutil

import pytest
from PIL import Image, ImageFilter

from conftest import FIXTURES, assert_one_line_error, load_json, run_curate

pytestmark = pytest.mark.slow      # every test runs dedup with a model

PHOTO = FIXTURES / "images" / "coco" / "train2017" / "000000000001.jpg"      # the astronaut


def sample(id, image, answer="An answer."):
    return {"id": id, "image": image, "conversations": [{"from": "human", "value": "<image>\nWhat is this?"},
                                                        {"from": "gpt", "value": answer}]}


def dataset(root):
    """A sharp photo and its copy (a duplicate), a blurred and a tiny image, a flat PNG, an
    empty answer."""
    photo = Image.open(PHOTO).convert("RGB")
    shutil.copy(PHOTO, root / "sharp.jpg")
    photo.save(root / "copy.png")
    photo.filter(ImageFilter.GaussianBlur(4)).save(root / "blurred.jpg", quality=90)
    photo.resize((40, 20)).save(root / "tiny.png")
    Image.new("RGB", (120, 90), (200, 30, 30)).save(root / "flat.png")
    records = [sample("sharp", "sharp.jpg"), sample("copy", "copy.png"), sample("blurred", "blurred.jpg"),
               sample("tiny", "tiny.png"), sample("flat", "flat.png"), sample("empty", "sharp.jpg", " ")]
    (root / "data.json").write_text(json.dumps(records))
    return root / "data.json"


FILTERS = ("--filter", "empty-answer", "--filter", "too-small=64", "--filter", "blurry", "--filter", "flat")


def dedup(root, out, *extra):
    return run_curate("dedup", root / "data.json", "-o", out, "--image-root", root, "--embedder", "timm-pool",
                      "--verify", "none", "-t", "0.95", "--index", "exact", "--workers", "2", *extra, check=0)


def removed_lines(out):
    return {r["id"]: r for r in load_json(out.with_name(out.name + ".report") / "removed.jsonl")}


def test_filters_run_before_the_duplicate_filter_and_read_no_image_twice(tmp_path, monkeypatch):
    from curate.plugins import image_look
    decoded = []
    real = image_look.decode
    monkeypatch.setattr(image_look, "decode", lambda path: decoded.append(path) or real(path))
    dataset(tmp_path)
    out = tmp_path / "out.json"
    result = dedup(tmp_path, out, "--no-cache", *FILTERS)
    assert decoded == []                        # every look came from the embedder's decode
    assert "duplicates: removed 1 samples of those the filters kept" in " ".join(result.stderr.split())
    removed = removed_lines(out)
    assert removed["empty"]["filter"] == "empty-answer"
    assert removed["tiny"]["filter"] == "too-small" and removed["tiny"]["value"] == 20
    assert removed["blurred"]["filter"] == "blurry" and removed["blurred"]["value"] > 0.55
    assert removed["flat"]["filter"] == "flat" and removed["flat"]["value"] == 0
    assert removed["copy"]["duplicate_of_id"] == "sharp"
    assert [r["id"] for r in load_json(out)] == ["sharp"]
    report = json.loads((tmp_path / "out.json.report" / "report.json").read_text())
    assert report["accounting"] == {"input": 6, "written": 1, "removed": 5, "rejected": 0}
    assert {f["name"]: f["removed"] for f in report["filters"]} == {"empty-answer": 1, "too-small": 1, "blurry": 1,
                                                                   "flat": 1}
    assert "filter blurry (blur over 0.55): removed 1 samples" in \
        (tmp_path / "out.json.report" / "report.md").read_text()
    html = (tmp_path / "out.json.report" / "report.html").read_text()
    assert "<tr><td>too-small</td><td>shorter side under 64 px</td><td>1</td></tr>" in html


def test_shared_looks_judge_as_the_filters_alone_do(tmp_path, monkeypatch):
    """The values measured from dedup's decode are those `curate filter` measures (here the
    images are no larger than a look, so both see the same pixels); images the embedding cache
    had are decoded by the filters, with the same outcome."""
    dataset(tmp_path)
    run_curate("filter", tmp_path / "data.json", "-o", tmp_path / "alone.json", "--image-root", tmp_path,
               "-q", *FILTERS, check=0)
    alone = {r["id"]: r for r in load_json(tmp_path / "alone.json.removed.jsonl")}
    cache = tmp_path / "cache"
    for name in ("first.json", "cached.json"):          # the second run's vectors come from the cache
        out = tmp_path / name
        dedup(tmp_path, out, "--cache", cache, *FILTERS)
        shared = {i: r for i, r in removed_lines(out).items() if "filter" in r}
        assert shared == alone, name


def test_no_filter_named_runs_none_and_decisions_only_refuses_filters(tmp_path):
    dataset(tmp_path)
    out = tmp_path / "out.json"
    dedup(tmp_path, out, "--no-cache")
    assert not any("filter" in r for r in removed_lines(out).values())
    assert json.loads((tmp_path / "out.json.report" / "report.json").read_text())["filters"] == []
    result = run_curate("dedup", tmp_path / "data.json", "-o", tmp_path / "d.jsonl", "--image-root", tmp_path,
                        "--embedder", "timm-pool", "--decisions-only", "--filter", "blurry", check=1)
    assert_one_line_error(result, "--filter", "--decisions-only")
    result = run_curate("dedup", tmp_path / "data.json", "-o", tmp_path / "e.json", "--image-root", tmp_path,
                        "--embedder", "timm-pool", "--filter", "blurry=2", check=1)
    assert_one_line_error(result, "blurry", "'2'")
    assert not (tmp_path / "e.json").exists()


def test_a_duplicate_stays_when_a_filter_removed_every_sample_of_its_kept_image(tmp_path):
    """The kept image's only sample has an empty answer (a filter removes it): its copy's sample
    is then the picture's last one in the output, and stays, with a note saying why."""
    shutil.copy(PHOTO, tmp_path / "sharp.jpg")
    Image.open(PHOTO).convert("RGB").save(tmp_path / "copy.png")
    records = [sample("empty", "sharp.jpg", " "), sample("copy", "copy.png")]
    (tmp_path / "data.json").write_text(json.dumps(records))
    out = tmp_path / "out.json"
    result = dedup(tmp_path, out, "--no-cache", "--filter", "empty-answer")
    assert [r["id"] for r in load_json(out)] == ["copy"]
    assert [r.get("filter") for r in removed_lines(out).values()] == ["empty-answer"]
    assert "the image they duplicate is not in the output" in result.stdout + result.stderr
    # without the filter, the copy goes as a duplicate of the kept photo, which is written
    dedup(tmp_path, tmp_path / "plain.json", "--no-cache")
    assert [r["id"] for r in load_json(tmp_path / "plain.json")] == ["empty"]
