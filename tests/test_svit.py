"""`curate convert svit llava` reproduces SVIT's own LLaVA-1.5 release rules."""

import json
import re
import shutil

import pytest

from conftest import FIXTURES, REAL, assert_one_line_error, load_json, needs_shared, run_curate
from curate.plugins.svit import REFERRING_INSTRUCTIONS

SVIT = FIXTURES / "svit"
IMAGES = FIXTURES / "images"
BOX = re.compile(r"\[([^\[\]]*)\]")


def convert(tmp_path, *inputs, extra=(), check=0, name="out.json"):
    out = tmp_path / name
    result = run_curate("convert", "svit", "llava", *inputs, "-o", out, "--image-root", IMAGES, "-q",
                        "--overwrite", *extra, check=check)
    return out, result


def test_referring_qas_as_in_the_release(tmp_path):
    out, _ = convert(tmp_path, SVIT / "referring_qa.json")
    records = load_json(out)
    assert [r["id"] for r in records] == [f"svit_referring_{n}" for n in range(4)]
    assert [r["image"] for r in records] == ["vg/VG_100K/1.jpg", "vg/VG_100K/1.jpg", "vg/VG_100K/2.jpg",
                                             "vg/VG_100K_2/4.jpg"]
    first = records[0]["conversations"]
    question, instruction = first[0]["value"].rsplit("? ", 1)
    assert question == "<image>\nWhat is the material of the wall [0.05, 0.1, 0.95, 0.9] based on its color"
    assert instruction in REFERRING_INSTRUCTIONS
    # 320x320 is square: only the pixel rounding shows (0.12 * 320 = 38.4 -> 38 -> 0.119)
    assert first[1]["value"] == ("The wall [0.05, 0.1, 0.95, 0.9] is made of red bricks [0.1, 0.119, 0.3, 0.25], "
                                 "[0.309, 0.119, 0.519, 0.25] laid in rows.")
    # 200x320 portrait: shift (320 - 200) // 2 = 60 on x
    assert records[3]["conversations"][1]["value"] == (
        "The astronaut [0.188, 0.05, 0.812, 1.0] wears an orange spacesuit [0.266, 0.456, 0.681, 1.0].")
    # 320x253 landscape: three boxes in a row, each padded (shift 33 on y)
    assert "coins [0.1, 0.263, 0.3, 0.419], [0.5, 0.263, 0.7, 0.419], [0.1, 0.578, 0.3, 0.734] are" \
        in records[2]["conversations"][0]["value"]
    # a bracket that is not a box is left alone, and no marker survives
    assert "person [on the left] wearing?" in records[3]["conversations"][0]["value"]
    assert "<st>" not in out.read_text() and "<ed>" not in out.read_text()


def test_every_task_has_the_release_granularity(tmp_path):
    out, _ = convert(tmp_path, *sorted(SVIT.glob("*.json")))
    records = load_json(out)
    by_task = {}
    for r in records:
        by_task.setdefault(r["id"].split("_")[1], []).append(r)
    assert [len(r["conversations"]) for r in by_task["conversation"]] == [4, 2, 2]   # a conversation per record
    assert all(len(r["conversations"]) == 2 for t in ("complex", "referring", "detail") for r in by_task[t])
    assert len(by_task["complex"]) == 2 and len(by_task["detail"]) == 2
    for r in records:
        assert r["conversations"][0]["from"] == "human" and r["conversations"][0]["value"].startswith("<image>\n")
        assert sum(t["value"].count("<image>") for t in r["conversations"]) == 1
    assert by_task["conversation"][0]["topic"] == "wall"      # extra keys survive


def test_same_seed_same_bytes_other_seed_other_instructions(tmp_path):
    a, _ = convert(tmp_path, SVIT / "referring_qa.json", name="a.json")
    b, _ = convert(tmp_path, SVIT / "referring_qa.json", name="b.json")
    assert a.read_bytes() == b.read_bytes()
    outputs = {convert(tmp_path, SVIT / "referring_qa.json", extra=("--seed", str(s)), name=f"s{s}.json")[0]
               .read_text() for s in range(6)}
    assert len(outputs) > 1


def test_visual_genome_root_works_like_the_llava_root(tmp_path):
    vg = tmp_path / "VG"
    shutil.copytree(IMAGES / "vg", vg)           # VG/VG_100K/..., VG/VG_100K_2/...
    out = tmp_path / "o.json"
    run_curate("convert", "svit", "llava", SVIT / "referring_qa.json", "-o", out, "--image-root", vg, "-q", check=0)
    expected, _ = convert(tmp_path, SVIT / "referring_qa.json", name="e.json")
    assert out.read_bytes() == expected.read_bytes()


def _write(tmp_path, records, name="referring_qa.json"):
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return path


def test_unknown_image_id_is_an_error_or_a_reject(tmp_path):
    records = json.loads((SVIT / "referring_qa.json").read_text())
    records[1]["image_id"] = 999
    source = _write(tmp_path, records)
    _, result = convert(tmp_path, source, check=None)
    assert_one_line_error(result, "record 1", "999", "image_id", "VG_100K_2")
    out, _ = convert(tmp_path, source, extra=("--on-error", "skip"))
    assert len(load_json(out)) == 3
    assert load_json(str(out) + ".rejects.jsonl")[0]["record"]["image_id"] == 999


@pytest.mark.parametrize("box, fragment", [
    ("[0.1, 0.2, 0.3]", "malformed box"),
    ("[0.1, 0.2, 1.3, 0.4]", "outside [0, 1]"),
    ("[0.5, 0.2, 0.3, 0.4]", "x1 > x2"),
    ("[0.1, 0.2, 0.3, 0.4], [0.1, x, 0.3, 0.4]", "malformed box"),
])
def test_bad_boxes_are_reported_with_the_record_id(tmp_path, box, fragment):
    records = json.loads((SVIT / "referring_qa.json").read_text())
    records[2]["conversations"][0]["content"][1]["value"] = f"There are <st>coins<ed> {box} here."
    _, result = convert(tmp_path, _write(tmp_path, records), check=None)
    assert_one_line_error(result, "record 2", "svit_referring_3", fragment, "content[1].value")


def test_task_is_needed_when_the_file_does_not_say(tmp_path):
    source = _write(tmp_path, json.loads((SVIT / "complex_reasoning.json").read_text()), name="part1.json")
    _, result = convert(tmp_path, source, check=None)
    assert_one_line_error(result, "--svit-task")
    out, _ = convert(tmp_path, source, extra=("--svit-task", "complex"))
    assert [r["id"] for r in load_json(out)] == ["svit_complex_0", "svit_complex_1"]


def test_svit_needs_an_image_root(tmp_path):
    result = run_curate("convert", "svit", "llava", SVIT / "referring_qa.json", "-o", tmp_path / "o.json")
    assert_one_line_error(result, "--image-root")


@needs_shared
def test_output_has_the_shape_of_the_real_release(tmp_path):
    """Compare with the 39 real svit_referring records: instructions, markers, box formatting."""
    real = [r for r in load_json(REAL / "svit_mix_665k_llava_format.every500.json")
            if str(r["id"]).startswith("svit_referring_")]
    assert len(real) == 39
    ours = load_json(convert(tmp_path, SVIT / "referring_qa.json")[0])

    def shape(records):
        for r in records:
            assert re.fullmatch(r"svit_referring_\d+", r["id"])
            assert re.fullmatch(r"vg/VG_100K(_2)?/\d+\.jpg", r["image"])
            human, gpt = (t["value"] for t in r["conversations"])
            assert human.startswith("<image>\n") and len(r["conversations"]) == 2
            assert any(human.endswith(" " + i) for i in REFERRING_INSTRUCTIONS)
            assert "<st>" not in human + gpt and "<ed>" not in human + gpt
            for group in BOX.findall(human + gpt):
                values = group.split(", ")
                if len(values) == 4 and all(re.fullmatch(r"[\d.]+", v) for v in values):
                    assert all(v == repr(round(float(v), 3)) and 0 <= float(v) <= 1 for v in values), group
    shape(real)
    shape(ours)
    used = {i for r in real for i in REFERRING_INSTRUCTIONS if r["conversations"][0]["value"].endswith(i)}
    assert used == set(REFERRING_INSTRUCTIONS)


@pytest.mark.slow
def test_dedup_of_svit_writes_padded_boxes(tmp_path):
    out = tmp_path / "o.json"
    run_curate("dedup", SVIT / "referring_qa.json", "-o", out, "--image-root", IMAGES, "--embedder", "timm-pool",
               "--to", "llava", "--no-cache", "-q", check=0)
    portrait = next(r for r in load_json(out) if r["id"] == "svit_referring_3")
    assert "astronaut [0.188, 0.05, 0.812, 1.0]" in portrait["conversations"][1]["value"]
