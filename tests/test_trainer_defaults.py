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
