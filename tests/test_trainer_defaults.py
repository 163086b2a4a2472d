"""Issue #23, item 6: each trainer's defaults, as its own code sets them. Qwen2.5-VL boxes for the
pixel limits qwen-vl-finetune trains with, ids that Hugging Face datasets loads for the writers
whose trainer loads through it, one box convention in a LLaMA-Factory merge, boxes clamped to the
image counted, and the sidecar note that names a file once."""

import json

import pytest
from PIL import Image

from conftest import FIXTURES, REAL, load_json, needs_shared, run_curate
from curate.boxes import smart_resize

IMAGES = FIXTURES / "images"


def one_line(text: str) -> str:
    return " ".join(text.split())


def svit_record(image_id: int, box: str = "[0.05, 0.1, 0.95, 0.9]") -> dict:
    return {"image_id": image_id, "conversations": [{"content": [
        {"from": "user", "value": f"Where is the <st>wall<ed> {box}?"},
        {"from": "gpt", "value": f"The <st>wall<ed> {box} fills the picture."}]}]}


def test_qwen25_boxes_default_to_qwen_vl_finetunes_pixel_limits(tmp_path):
    # 1024x768 = 786,432 pixels: over qwen-vl-finetune's 451,584 (28*28*576), under the
    # processor's own 1,003,520, so the two defaults give different boxes
    root = tmp_path / "images"
    (root / "vg" / "VG_100K").mkdir(parents=True)
    Image.new("RGB", (1024, 768), "white").save(root / "vg" / "VG_100K" / "7.jpg")
    source = tmp_path / "svit.json"
    source.write_text(json.dumps([svit_record(7)]))
    assert smart_resize(768, 1024, 28, 28 * 28 * 16, 28 * 28 * 576) == (560, 756)
    out = tmp_path / "q.json"
    result = run_curate("convert", "svit", "qwen-vl", source, "-o", out, "--image-root", root, check=0)
    # 0.05 * 1024 * 756 / 1024 = 37.8 -> 38; 0.1 * 768 * 560 / 768 = 56; 718.2 -> 718; 504
    assert '{"bbox_2d": [38, 56, 718, 504], "label": "wall"}' in load_json(out)[0]["conversations"][1]["value"]
    assert "min_pixels 12,544 and max_pixels 451,584" in one_line(result.stderr)
    # the processor's own limits when the training uses them: 1036x756, as before
    out = tmp_path / "q1m.json"
    result = run_curate("convert", "svit", "qwen-vl", source, "-o", out, "--image-root", root,
                        "--qwen-min-pixels", 3136, "--qwen-max-pixels", 1003520, check=0)
    assert '"bbox_2d": [52, 76, 984, 680]' in load_json(out)[0]["conversations"][1]["value"]
    assert "min_pixels 3,136 and max_pixels 1,003,520" in one_line(result.stderr)


def test_sidecar_note_names_the_file_once(tmp_path):
    result = run_curate("convert", "svit", "llama-factory", FIXTURES / "svit" / "referring_qa.json",
                        "-o", tmp_path / "lf.json", "--image-root", IMAGES, check=0)
    said = one_line(result.stderr)
    assert f"merged this dataset into the LLaMA-Factory dataset list {tmp_path / 'dataset_info.json'}" in said
    assert "dataset_info.json dataset_info.json" not in said


def mixed_id_llava(tmp_path):
    records = load_json(FIXTURES / "llava_small.json")[:4]
    records[0]["id"], records[1]["id"] = 33471, "000000033471"      # as GQA's and COCO's ids in the 665K mix
    source = tmp_path / "mixed.json"
    source.write_text(json.dumps(records))
    return source, [r["id"] for r in records]


@pytest.mark.parametrize("writer, name", [("llama-factory", "lf.json"), ("ms-swift", "swift.jsonl")])
def test_writers_whose_trainer_loads_with_datasets_write_string_ids(tmp_path, monkeypatch, writer, name):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    source, ids = mixed_id_llava(tmp_path)
    out = tmp_path / name
    result = run_curate("convert", "llava", writer, source, "-o", out, "--on-error", "skip", check=0)
    assert "ids mix" not in result.stderr
    assert "wrote 1 ids that were not strings as strings" in one_line(result.stderr)
    loaded = datasets.load_dataset("json", data_files=str(out), split="train")
    assert loaded["id"][:2] == ["33471", "000000033471"]        # leading zeros kept, one type
    assert loaded["id"][2:] == [str(i) for i in ids[2:]]


def test_llava_output_keeps_mixed_ids_without_a_warning(tmp_path):
    source, ids = mixed_id_llava(tmp_path)
    out = tmp_path / "llava.json"
    result = run_curate("convert", "llava", "llava", source, "-o", out, check=0)
    assert [r["id"] for r in load_json(out)] == ids and "ids" not in result.stderr


@needs_shared
def test_the_real_llava_mix_as_llama_factory_loads_in_datasets(tmp_path, monkeypatch):
    """The 665K mix holds GQA's integer ids beside COCO's "000000033471": LLaMA-Factory's output
    with the default ids loads, and each id reads back as the text it was."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    source = REAL / "llava_v1_5_mix665k.every500.json"
    ids = [r["id"] for r in load_json(source)]
    assert {type(i) for i in ids} == {int, str}
    out = tmp_path / "lf.json"
    run_curate("convert", "llava", "llama-factory", source, "-o", out, "-q", check=0)
    loaded = datasets.load_dataset("json", data_files=str(out), split="train")
    assert loaded["id"] == [str(i) for i in ids]


def llava_box_record(record_id: str, box: str) -> dict:
    # coco/train2017/000000000003.jpg is 320x213: padded to 320x320, the image starts 53 px down
    return {"id": record_id, "image": "coco/train2017/000000000003.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhere is the dog?"}, {"from": "gpt", "value": f"It is at {box}."}]}


def test_llama_factory_writes_one_box_convention_when_inputs_differ(tmp_path):
    svit = FIXTURES / "svit" / "referring_qa.json"
    llava = tmp_path / "llava.json"
    llava.write_text(json.dumps([llava_box_record("dog", "[0.1, 0.2, 0.5, 0.6]")]))
    out = tmp_path / "lf.json"
    result = run_curate("convert", "auto", "llama-factory", svit, llava, "-o", out, "--image-root", IMAGES,
                        "--dataset-info", "none", check=0)
    said = one_line(result.stderr)
    assert "different conventions (svit: original, llava: padded)" in said and "written as original" in said
    records = load_json(out)
    # unpadded: y1 = 0.2 * 320 - 53 = 11 px of 213 -> 0.052; y2 = 192 - 53 = 139 px -> 0.653
    assert records[-1]["messages"][1]["content"] == "It is at [0.1, 0.052, 0.5, 0.653]."
    assert "The wall [0.05, 0.1, 0.95, 0.9]" in records[0]["messages"][1]["content"]
    # the other order: every box padded, as the LLaVA input's (1.jpg is square: the same numbers)
    out = tmp_path / "lf2.json"
    result = run_curate("convert", "auto", "llama-factory", llava, svit, "-o", out, "--image-root", IMAGES,
                        "--dataset-info", "none", check=0)
    assert "written as padded" in one_line(result.stderr)
    assert load_json(out)[0]["messages"][1]["content"] == "It is at [0.1, 0.2, 0.5, 0.6]."
    # one convention in: nothing to say
    result = run_curate("convert", "auto", "llama-factory", svit, "-o", tmp_path / "lf3.json", "--image-root", IMAGES,
                        "--dataset-info", "none", check=0)
    assert "different conventions" not in result.stderr


def test_boxes_clamped_to_the_image_are_counted(tmp_path):
    # y1 = 0.05 * 320 - 53 = -37 px: in the padding, 37 px above the image; 0.165 * 320 - 53 = -0.2 px
    # is the padded value's rounding, not a box outside the image
    llava = tmp_path / "llava.json"
    llava.write_text(json.dumps([llava_box_record("out", "[0.1, 0.05, 0.5, 0.6]"),
                                 llava_box_record("edge", "[0.1, 0.165, 0.5, 0.6]")]))
    out = tmp_path / "o.json"
    result = run_curate("convert", "llava", "llava", llava, "-o", out, "--boxes", "original", "--image-root", IMAGES,
                        check=0)
    said = one_line(result.stderr)
    assert "1 fell outside their image once converted and were clamped to it (e.g. [0.1, -0.174, 0.5, 0.653]" in said
    assert "--image-root" in said
    assert [r["conversations"][1]["value"] for r in load_json(out)] == ["It is at [0.1, 0.0, 0.5, 0.653].",
                                                                       "It is at [0.1, 0.0, 0.5, 0.653]."]
    result = run_curate("convert", "llava", "llava", llava, "-o", tmp_path / "p.json", "--boxes", "pixels",
                        "--image-root", IMAGES, check=0)
    assert "1 fell outside their image" in one_line(result.stderr)
