"""Issue #23, item 6: each trainer's defaults, as its own code sets them. Qwen2.5-VL boxes for the
pixel limits qwen-vl-finetune trains with, ids that Hugging Face datasets loads for the writers
whose trainer loads through it, one box convention in a LLaMA-Factory merge, boxes clamped to the
image counted, and the sidecar note that names a file once."""

import json

from PIL import Image

from conftest import FIXTURES, load_json, run_curate
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
