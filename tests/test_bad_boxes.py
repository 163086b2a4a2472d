"""Boxes that are not boxes (issue #27): one parser for every syntax refuses non-finite,
inverted and empty boxes wherever they appear, as a record-level error (one line naming file,
record and field; with --on-error skip the record goes to the rejects with its reason); Qwen's
pixel limits are checked when the options are parsed; ms-swift says what its boxes mean."""

import json
import re

import pytest

import curate
from conftest import FIXTURES, assert_one_line_error, load_json, run_curate
from curate.boxes import (BRACKET_ORIGINAL, BRACKET_PADDED, INTERNVL, SVIT_ORIGINAL, BoxError, BoxStyle,
                          PaddingLane, rewrite_boxes, smart_resize)

IMAGES = FIXTURES / "images"
IMAGE = "vg/VG_100K/1.jpg"            # 320x320
QWEN = BoxStyle("qwen-1000", "qwen-json")
SMART = BoxStyle("smart-resize", "qwen-json")
SWIFT = BoxStyle("original", "swift")


def rewrite(text, source, target=BRACKET_PADDED):
    return rewrite_boxes(text, source, target, lambda: (320, 320), {"ref": [], "bbox": []})


# --- the parser -----------------------------------------------------------------------------------

@pytest.mark.parametrize("source, text, fragment", [
    (INTERNVL, "<ref>dog</ref><box>[[nan, 0, 10, 10]]</box>", "malformed box [nan, 0, 10, 10]"),
    (INTERNVL, "<box>[[1e309, 0, 10, 10]]</box>", "not finite"),
    (INTERNVL, "<box>[[a, b, c, d]]</box>", "expected four numbers"),
    (INTERNVL, "<box>[[]]</box>", "malformed box []"),
    (INTERNVL, "<box>[]</box>", "malformed <box>[]</box>"),
    (INTERNVL, "<box>[[10, 20, 30, 40]</box>", "malformed <box>"),
    (INTERNVL, "<box>[[10, 20, 30, 40], [1, 2, 3]]</box>", "malformed box [1, 2, 3]"),
    (INTERNVL, "<box>[[50, 20, 30, 40]]</box>", "x1 > x2"),
    (INTERNVL, "<box>[[10, 20, 10, 40]]</box>", "is empty"),
    (INTERNVL, "<box>[[10, 20, 30, 4000]]</box>", "outside [0, 1000]"),
    (INTERNVL, "<box>[[-10, 20, 30, 40]]</box>", "outside [0, 1000]"),
    (QWEN, 'a {"bbox_2d": [NaN, 0, 10, 10]}', "not finite"),
    (QWEN, 'a {"bbox_2d": ["1", 0, 10, 10]}', "expected four numbers"),
    (QWEN, 'a {"bbox_2d": [true, 0, 10, 10]}', "expected four numbers"),
    (QWEN, 'a [{"bbox_2d": [1, 2, 3, 4]}, {"bbox_2d": [5, 2, 3, 4]}]', "x1 > x2"),
    (QWEN, 'a {"bbox_2d": [1, 2, 3]}', "expected four numbers"),
    (BRACKET_ORIGINAL, "a [0.5, 0.2, 0.3, 0.4]", "x1 > x2"),
    (BRACKET_ORIGINAL, "a [0.5, 0.2, 0.5, 0.4]", "is empty"),
    (SVIT_ORIGINAL, "a <st>dog<ed> [0.5, 0.2, 0.3, 0.4]", "x1 > x2"),
    (SVIT_ORIGINAL, "a <st>dog [0.5, 0.2, 0.3, 0.4] runs", "x1 > x2"),        # <st> without <ed>
    (SVIT_ORIGINAL, "a dog [0.5, 0.2, 0.3, 0.4] runs", "x1 > x2"),
    (SVIT_ORIGINAL, "a <st>dog<ed> [0.1, 0.2, 1.3, 0.4]", "outside [0, 1]"),
    (SVIT_ORIGINAL, "a <st>dog<ed> [0.1, 0.2, inf, 0.4]", "expected four numbers"),
    (SVIT_ORIGINAL, "a <st>dog [0.1, 0.2, 0.3, 0.4]<ed> [0.5, 0.5, 0.6, 0.6]", "inside the referring expression"),
    (SVIT_ORIGINAL, "a <st>dog [0.1, 0.2, 0.3, 0.4]<ed> runs", "inside the referring expression"),
])
@pytest.mark.parametrize("target", [BRACKET_PADDED, INTERNVL, SMART, SWIFT], ids=lambda t: t.syntax)
def test_every_syntax_refuses_what_is_not_a_box(source, text, fragment, target):
    if source == target:
        return
    with pytest.raises(BoxError, match=re.escape(fragment)):
        rewrite(text, source, target)


@pytest.mark.parametrize("text", ["[1, 2, 3, 4]", "[nan, 0, 1, 1]", "[1e309, 0, 0.5, 0.5]", "[on the left]",
                                  "[0.1, 0.2, 0.3]", "[-0.5, 0.2, 0.3, 0.4]"])
def test_brackets_no_syntax_marks_and_outside_the_range_stay_text(text):
    assert rewrite(f"a {text} b", BRACKET_ORIGINAL) == (f"a {text} b", 0)
    assert rewrite(f"<image> a {text} b", SVIT_ORIGINAL, INTERNVL) == (f"<image> a {text} b", 0)


def test_a_box_thinner_than_the_targets_resolution_is_written_as_rounded_and_counted():
    """A valid box one pixel high rounds to a line in the target's resolution: the record is
    kept and the box written as the trainer's own rule gives it (SVIT's release does the same),
    and the run's note counts such boxes."""
    thin = []
    assert rewrite_boxes("a [0.1, 0.2, 0.1004, 0.4]", BRACKET_ORIGINAL, INTERNVL, lambda: (320, 320),
                         thin=thin) == ("a <box>[[100, 200, 100, 400]]</box>", 1)
    assert thin == [[100, 200, 100, 400]]
    lane = PaddingLane(BRACKET_ORIGINAL)
    assert lane(["a [0.1, 0.2, 0.101, 0.4]"], lambda: (320, 320)) is None      # 32 and 32 pixels: the slow path
    assert rewrite("a [0.1, 0.2, 0.101, 0.4]", BRACKET_ORIGINAL)[0] == "a [0.1, 0.2, 0.1, 0.4]"


def test_svit_box_in_a_referring_expression_is_neither_duplicated_nor_left_unconverted():
    text = "The <st>dog [0.1, 0.2, 0.3, 0.4]<ed> [0.5, 0.5, 0.6, 0.6] runs."
    assert PaddingLane(SVIT_ORIGINAL)([text], lambda: (320, 320)) is None
    for target in (BRACKET_PADDED, INTERNVL, QWEN):
        with pytest.raises(BoxError, match="inside the referring expression"):
            rewrite(text, SVIT_ORIGINAL, target)
    # a bracket that is not a box may stay in the expression, and goes into <ref> and the label
    plain = "The <st>dog [on the left]<ed> [0.5, 0.5, 0.6, 0.6] runs."
    assert rewrite(plain, SVIT_ORIGINAL, INTERNVL)[0] == \
        "The <ref>dog [on the left]</ref><box>[[500, 500, 600, 600]]</box> runs."


# --- through the command line: internal errors become record errors --------------------------------

BAD = ["[[nan, 0, 10, 10]]", "[[1e309, 0, 10, 10]]", "[[a, b, c, d]]", "[[]]", "[[50, 20, 30, 40]]"]


def internvl_file(tmp_path):
    records = [{"id": f"r{n}", "image": IMAGE,
                "conversations": [{"from": "human", "value": "<image>\nWhere is the dog?"},
                                  {"from": "gpt", "value": f"<ref>dog</ref><box>{box}</box>"}]}
               for n, box in enumerate([*BAD, "[[100, 200, 300, 400]]"])]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("writer, name", [("qwen-vl", "o.json"), ("llava", "o.json"), ("ms-swift", "o.jsonl")])
def test_internvl_boxes_that_are_not_numbers_are_record_errors(tmp_path, writer, name):
    source, out = internvl_file(tmp_path), tmp_path / name
    result = run_curate("convert", "internvl", writer, source, "-o", out, "--image-root", IMAGES, "-q")
    assert_one_line_error(result, "in.jsonl", "'r0'", "conversations[1]", "malformed box [nan, 0, 10, 10]")
    assert not out.exists()
    run_curate("convert", "internvl", writer, source, "-o", out, "--image-root", IMAGES, "-q",
               "--on-error", "skip", check=0)
    written = load_json(out)
    assert [r["id"] for r in written] == ["r5"] and "null" not in out.read_text()
    rejects = load_json(str(out) + ".rejects.jsonl")
    assert [r["id"] for r in rejects] == [f"r{n}" for n in range(len(BAD))]
    assert [r["field"] for r in rejects] == ["conversations[1]"] * len(BAD)
    assert ["not finite" in r["reason"] or "four numbers" in r["reason"] or "x1 > x2" in r["reason"]
            for r in rejects] == [True] * len(BAD)


def svit_file(tmp_path, answer):
    records = [{"image_id": 1, "conversations": [{"content": [
        {"from": "user", "value": "Where is the <st>wall<ed> [0.05, 0.1, 0.95, 0.9]?"},
        {"from": "gpt", "value": answer}]}]}]
    path = tmp_path / "referring_qa.json"
    path.write_text(json.dumps(records))
    return path


@pytest.mark.parametrize("answer, fragment", [
    ("A <st>cup [0.1, 0.2, 0.3, 0.4]<ed> [0.5, 0.5, 0.6, 0.6].", "inside the referring expression"),
    ("A <st>cup [0.5, 0.4, 0.3, 0.48] is red.", "x1 > x2"),             # <st> without <ed>
    ("A <st>cup<ed> [0.5, 0.4, 0.3, 0.48] is red.", "x1 > x2"),
    ("A cup [0.5, 0.4, 0.5, 0.48] is red.", "is empty"),
])
@pytest.mark.parametrize("writer", ["llava", "internvl", "qwen-vl"])
def test_svit_refuses_the_same_bad_box_wherever_it_is(tmp_path, answer, fragment, writer):
    out = tmp_path / ("o.jsonl" if writer == "internvl" else "o.json")
    result = run_curate("convert", "svit", writer, svit_file(tmp_path, answer), "-o", out, "--image-root", IMAGES,
                        "-q")
    assert_one_line_error(result, "referring_qa.json", "record 0", "svit_referring_0",
                          "conversations[0].content[1].value", fragment)
    assert not out.exists()


# --- Qwen's pixel limits ------------------------------------------------------------------------------

@pytest.mark.parametrize("option, value", [("--qwen-max-pixels", 10 ** 400), ("--qwen-min-pixels", 10 ** 400),
                                           ("--qwen-max-pixels", 100), ("--qwen-max-pixels", 28 * 28 - 1),
                                           ("--qwen-min-pixels", 0)])
def test_qwen_pixel_limits_are_checked_when_options_are_parsed(tmp_path, option, value):
    out = tmp_path / "q.json"
    result = run_curate("convert", "svit", "qwen-vl", FIXTURES / "svit" / "referring_qa.json", "-o", out,
                        "--image-root", IMAGES, "-q", option, value)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert f"Invalid value for '{option}'" in result.stderr
    assert not out.exists()


def test_qwen_pixel_limits_are_checked_for_the_python_api_too(tmp_path):
    for settings, fragment in (({"qwen_max_pixels": 100}, "qwen_max_pixels: must lie in 784.."),
                               ({"qwen_min_pixels": 10 ** 400}, "qwen_min_pixels: must lie in 1.."),
                               ({"qwen_min_pixels": 5000, "qwen_max_pixels": 4000},
                                "qwen_min_pixels .5,000. is above qwen_max_pixels")):
        with pytest.raises(curate.CurateError, match=fragment):
            curate.convert([FIXTURES / "svit" / "referring_qa.json"], tmp_path / "q.json", "svit", "qwen-vl",
                           image_root=IMAGES, settings=settings)
        assert not (tmp_path / "q.json").exists()


def test_smart_resize_never_makes_a_side_zero():
    # transformers' smart_resize keeps a side at one factor at least when it shrinks
    assert smart_resize(28, 5000, 28, 1, 784) == (28, 364)
    assert smart_resize(320, 320, 28, 784, 784) == (28, 28)


def test_qwen_smallest_limit_writes_boxes_or_refuses_them(tmp_path):
    out = tmp_path / "q.json"
    run_curate("convert", "svit", "qwen-vl", FIXTURES / "svit" / "referring_qa.json", "-o", out,
               "--image-root", IMAGES, "-q", "--qwen-min-pixels", 784, "--qwen-max-pixels", 784,
               "--on-error", "skip", check=0)
    text = out.read_text()
    assert '"bbox_2d' in text and "[0, 0, 0, 0]" not in text
    boxes = [json.loads(b) for b in re.findall(r"\[\d+, \d+, \d+, \d+\]", text.replace("\\", ""))]
    assert boxes and all(x1 < x2 <= 27 and y1 < y2 <= 27 for x1, y1, x2, y2 in boxes)


# --- ms-swift ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("boxes", ["padded", "thousand", "qwen-1000", "smart-resize"])
def test_ms_swift_refuses_conventions_bbox_type_cannot_say(tmp_path, boxes):
    out = tmp_path / "s.jsonl"
    result = run_curate("convert", "svit", "ms-swift", FIXTURES / "svit" / "referring_qa.json", "-o", out,
                        "--image-root", IMAGES, "-q", "--boxes", boxes)
    assert_one_line_error(result, f"--boxes {boxes}", "norm1", "real")
    assert not out.exists()


def test_ms_swift_pixels_are_real(tmp_path):
    out = tmp_path / "s.jsonl"
    run_curate("convert", "svit", "ms-swift", FIXTURES / "svit" / "referring_qa.json", "-o", out,
               "--image-root", IMAGES, "-q", "--boxes", "pixels", check=0)
    objects = load_json(out)[0]["objects"]
    assert objects["bbox_type"] == "real" and objects["bbox"][0] == [16, 32, 304, 288]     # 320x320


def test_ms_swift_placeholders_already_in_the_text_are_refused(tmp_path):
    turns = [("Where is the <bbox>?", "dog [0.1, 0.2, 0.3, 0.4]"), ("Where <ref-object>?", "nowhere"),
             ("Where?", "dog [0.1, 0.2, 0.3, 0.4]")]
    records = [{"id": f"r{n}", "image": IMAGE, "conversations": [{"from": "human", "value": "<image>\n" + q},
                                                                  {"from": "gpt", "value": a}]}
               for n, (q, a) in enumerate(turns)]
    source, out = tmp_path / "in.json", tmp_path / "s.jsonl"
    source.write_text(json.dumps(records))
    result = run_curate("convert", "llava", "ms-swift", source, "-o", out, "--image-root", IMAGES, "-q")
    assert_one_line_error(result, "in.json", "'r0'", "conversations[0]", "<bbox>")
    run_curate("convert", "llava", "ms-swift", source, "-o", out, "--image-root", IMAGES, "-q", "--on-error",
               "skip", check=0)
    assert [r["id"] for r in load_json(out)] == ["r2"]
    assert [(r["id"], "<ref-object>" in r["reason"] or "<bbox>" in r["reason"])
            for r in load_json(str(out) + ".rejects.jsonl")] == [("r0", True), ("r1", True)]


def test_ms_swift_writes_no_record_whose_placeholders_and_objects_disagree(tmp_path):
    records = [{"id": "x", "messages": [{"role": "user", "content": "<image>where <bbox>"},
                                        {"role": "assistant", "content": "ok"}], "images": [IMAGE]},
               {"id": "y", "messages": [{"role": "user", "content": "<image>where <bbox>"},
                                        {"role": "assistant", "content": "ok"}], "images": [IMAGE],
                "objects": {"ref": [], "bbox": [[1, 2, 3, 4]], "bbox_type": "real"}}]
    source, out = tmp_path / "lf.json", tmp_path / "s.jsonl"
    source.write_text(json.dumps(records))
    result = run_curate("convert", "llama-factory", "ms-swift", source, "-o", out, "-q")
    assert_one_line_error(result, "'x'", "objects", "1 <bbox> placeholders", "0 objects.bbox")
    run_curate("convert", "llama-factory", "ms-swift", source, "-o", out, "-q", "--on-error", "skip", check=0)
    assert [r["id"] for r in load_json(out)] == ["y"]
