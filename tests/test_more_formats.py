"""llama-factory, internvl and textocr-gpt4v, and `curate preview`."""

import json
import re

import pytest

from conftest import FIXTURES, REAL, assert_one_line_error, load_json, needs_shared, run_curate

IMAGES = FIXTURES / "images"
NUMBERS = re.compile(r"\d+\.\d+|\d+")


@pytest.fixture(scope="module")
def svit_llava(tmp_path_factory):
    out = tmp_path_factory.mktemp("svit") / "svit.json"
    run_curate("convert", "svit", "llava", *sorted((FIXTURES / "svit").glob("*.json")), "-o", out,
               "--image-root", IMAGES, "-q", check=0)
    return out


def test_llama_factory_round_trip_is_lossless(tmp_path, llava_records):
    lf, back = tmp_path / "lf.json", tmp_path / "back.json"
    # --ids keep: lossless (by default llama-factory writes ids as strings, which its trainer can load)
    run_curate("convert", "llava", "llama-factory", FIXTURES / "llava_small.json", "-o", lf, "-q", "--ids", "keep",
               check=0)
    record = load_json(lf)[0]
    assert set(record) == {"id", "messages", "images"}
    assert record["messages"][0] == {"role": "user", "content": "<image>\nWhat are the colors of the bus in the image?"}
    assert record["images"] == ["coco/train2017/000000033471.jpg"]
    assert load_json(lf)[2]["images"] == []            # text-only
    run_curate("convert", "auto", "llava", lf, "-o", back, "-q", check=0)
    assert load_json(back) == llava_records


@needs_shared
@pytest.mark.parametrize("name", ["llava_v1_5_mix665k.every500.json", "sharegpt4v_mix665k.every500.json"])
def test_llama_factory_round_trip_on_real_data(tmp_path, name):
    lf, back = tmp_path / "lf.jsonl", tmp_path / "back.json"
    run_curate("convert", "llava", "llama-factory", REAL / name, "-o", lf, "-q", "--ids", "keep", check=0)
    run_curate("convert", "llama-factory", "llava", lf, "-o", back, "-q", check=0)
    assert load_json(back) == load_json(REAL / name)


def test_llama_factory_rejects_image_token_mismatch(tmp_path):
    source = tmp_path / "lf.json"
    source.write_text(json.dumps([{"messages": [{"role": "user", "content": "no token"},
                                                {"role": "assistant", "content": "x"}], "images": ["a.jpg"]}]))
    result = run_curate("convert", "llama-factory", "llava", source, "-o", tmp_path / "o.json")
    assert_one_line_error(result, "record 0", "0 <image> tokens for 1 images")


def test_internvl_boxes_round_trip_within_rounding(tmp_path, svit_llava):
    internvl, back = tmp_path / "i.jsonl", tmp_path / "back.json"
    result = run_curate("convert", "llava", "internvl", svit_llava, "-o", internvl, "--image-root", IMAGES, check=0)
    assert "converted 13 boxes from padded (bracket) to thousand (internvl)" in result.stderr.replace("\n", " ")
    text = internvl.read_text()
    # three boxes in a row stay one group; padded -> original -> [0, 1000) rounds twice
    assert "coins <box>[[100, 202, 300, 400], [500, 202, 700, 400], [100, 601, 300, 798]]</box> are" in text
    run_curate("convert", "internvl", "llava", internvl, "-o", back, "--image-root", IMAGES, "-q", check=0)
    original, returned = load_json(svit_llava), load_json(back)
    assert [r["id"] for r in returned] == [r["id"] for r in original]
    for a, b in zip(original, returned):
        for ta, tb in zip(a["conversations"], b["conversations"]):
            na, nb = [float(x) for x in NUMBERS.findall(ta["value"])], [float(x) for x in NUMBERS.findall(tb["value"])]
            assert len(na) == len(nb)
            assert all(abs(x - y) <= 0.006 for x, y in zip(na, nb)), (ta["value"], tb["value"])


def test_boxes_option_overrides_the_writer_convention(tmp_path, svit_llava):
    out = tmp_path / "pixels.json"
    run_curate("convert", "llava", "llava", svit_llava, "-o", out, "--image-root", IMAGES, "--boxes", "pixels",
               "-q", check=0)
    portrait = next(r for r in load_json(out) if r["id"] == "svit_referring_3")
    assert "astronaut [0, 16, 200, 320]" in portrait["conversations"][1]["value"]


def test_boxes_without_image_root_name_the_record(tmp_path, svit_llava):
    result = run_curate("convert", "llava", "internvl", svit_llava, "-o", tmp_path / "o.jsonl")
    assert_one_line_error(result, "svit_referring_0", "--image-root")


@needs_shared
def test_textocr_reader(tmp_path):
    out = tmp_path / "t.json"
    run_curate("convert", "textocr-gpt4v", "llava", REAL / "textocr_gpt4v.first1000.json", "-o", out,
               "--image-prefix", "textocr/train_images", "--textocr-caption", "caption_condensed",
               "--textocr-instructions", "brief", "-q", check=0)
    records = load_json(out)
    source = load_json(REAL / "textocr_gpt4v.first1000.json")
    assert len(records) == len(source) == 1001
    assert records[0]["image"] == "textocr/train_images/" + source[0]["filename"]
    assert records[0]["conversations"][1]["value"] == source[0]["caption_condensed"].strip()
    assert records[0]["conversations"][0]["value"].startswith("<image>\n")
    auto = tmp_path / "auto.json"
    run_curate("convert", "auto", "llava", REAL / "textocr_gpt4v.first1000.json", "-o", auto, "-q", check=0)
    assert load_json(auto)[0]["conversations"][1]["value"] == source[0]["caption"].strip()


def test_preview_draws_padded_boxes_and_escapes(tmp_path, svit_llava):
    records = load_json(svit_llava)
    records[0]["conversations"][1]["value"] += ' <script>alert("x")</script>'
    hostile = tmp_path / "h.json"
    hostile.write_text(json.dumps(records))
    out = tmp_path / "p.html"
    run_curate("preview", hostile, "--image-root", IMAGES, "-o", out, "--ids", "svit_referring_3,svit_complex_0",
               check=0)
    html = out.read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert html.count("<section") == 2
    # a 200x320 portrait whose boxes mean the padded square is drawn square
    assert '<svg width="384" height="384"' in html and "drawn padded" in html
    assert html.count("<rect") == 2


def test_preview_of_original_boxes_draws_the_image_as_is(tmp_path):
    out = tmp_path / "p.html"
    run_curate("preview", FIXTURES / "svit" / "referring_qa.json", "--image-root", IMAGES, "-o", out, "--limit", "20",
               check=0)
    html = out.read_text()
    assert "drawn padded" not in html and '<svg width="240" height="384"' in html
