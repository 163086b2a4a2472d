"""Writers for the trainers people use today (Qwen-VL, ms-swift, InternVL, LLaMA-Factory), their
box conventions worked by hand, their sidecar files, ids Arrow can load, and every writer's
output loaded with Hugging Face `datasets` (what LLaMA-Factory and ms-swift load data with)."""

import json
from pathlib import Path

import pytest

from conftest import FIXTURES, assert_one_line_error, load_json, run_curate
from curate.boxes import QWEN25_RESIZE, convert_box, smart_resize

SVIT = FIXTURES / "svit" / "referring_qa.json"
IMAGES = FIXTURES / "images"


def convert(tmp_path, to, name, *extra, source=SVIT, reader="svit", check=0):
    out = tmp_path / name
    result = run_curate("convert", reader, to, source, "-o", out, "--image-root", IMAGES, "-q", *extra, check=check)
    return out, result


def lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# --- Qwen-VL ------------------------------------------------------------------------------------

def test_qwen_conventions_match_qwens_own_notebook():
    # QwenLM's process_bbox.ipynb: a COCO box [146, 137, 615, 415] (pixels) on a 640x428 image
    box = [146 / 640, 137 / 428, 615 / 640, 415 / 428]
    assert smart_resize(428, 640, *QWEN25_RESIZE) == (420, 644)
    assert convert_box(box, "original", "smart-resize", (640, 428)) == [147, 134, 619, 407]
    assert convert_box(box, "original", "qwen-1000", None) == [228, 320, 961, 970]     # its Qwen2-VL cell
    back = convert_box([147, 134, 619, 407], "smart-resize", "original", (640, 428))
    assert back == pytest.approx(box, abs=2e-3)


def test_qwen25_boxes_are_pixels_after_smart_resize_as_json(tmp_path):
    out, _ = convert(tmp_path, "qwen-vl", "q.json")
    first = load_json(out)[0]["conversations"]
    # 1.jpg is 320x320: smart resize gives 308x308, so 0.05 * 320 * 308 / 320 = 15.4 -> 15, ...
    assert first[0]["value"] == ('<image>\nWhat is the material of the wall {"bbox_2d": [15, 31, 293, 277], '
                                 '"label": "wall"} based on its color? ' + first[0]["value"].split("color? ")[1])
    assert first[1]["value"] == (
        'The wall {"bbox_2d": [15, 31, 293, 277], "label": "wall"} is made of red bricks '
        '[{"bbox_2d": [31, 37, 92, 77], "label": "bricks"}, {"bbox_2d": [95, 37, 160, 77], "label": "bricks"}] '
        'laid in rows.')


def test_qwen_model_and_pixels_options(tmp_path):
    out, _ = convert(tmp_path, "qwen-vl", "q3.json", "--qwen-model", "qwen3-vl")
    assert '{"bbox_2d": [50, 100, 950, 900], "label": "wall"}' in load_json(out)[0]["conversations"][1]["value"]
    # max 50,000 pixels: 308x308 is too many, so sides become floor(320 / 1.431 / 28) * 28 = 196
    out, _ = convert(tmp_path, "qwen-vl", "small.json", "--qwen-max-pixels", "50000")
    assert '"bbox_2d": [10, 20, 186, 176]' in load_json(out)[0]["conversations"][1]["value"]
    _, result = convert(tmp_path, "qwen-vl", "bad.json", "--qwen-min-pixels", "60000", "--qwen-max-pixels", "50000",
                        check=None)
    assert_one_line_error(result, "--qwen-min-pixels")
    assert not (tmp_path / "bad.json").exists()


# --- ms-swift -----------------------------------------------------------------------------------

def test_ms_swift_grounding_as_objects_with_placeholders(tmp_path):
    out, _ = convert(tmp_path, "ms-swift", "s.jsonl")
    record = lines(out)[0]
    assert record["images"] == ["vg/VG_100K/1.jpg"]
    assert record["messages"][1] == {"role": "assistant",
                                     "content": "The <ref-object><bbox> is made of red <ref-object><bbox><bbox> "
                                                "laid in rows."}
    assert record["messages"][0]["content"].startswith("<image>\nWhat is the material of the <ref-object><bbox> ")
    assert record["objects"] == {"ref": ["wall", "wall", "bricks"],
                                 "bbox": [[0.05, 0.1, 0.95, 0.9], [0.05, 0.1, 0.95, 0.9], [0.1, 0.12, 0.3, 0.25],
                                          [0.31, 0.12, 0.52, 0.25]],
                                 "bbox_type": "norm1"}
    for r in lines(out):      # every placeholder has its value
        text = "".join(m["content"] for m in r["messages"])
        objects = r.get("objects", {"ref": [], "bbox": []})
        assert text.count("<ref-object>") == len(objects["ref"]) and text.count("<bbox>") == len(objects["bbox"])


# --- InternVL -----------------------------------------------------------------------------------

def test_internvl_writes_refs_jsonl_only_and_its_meta_file(tmp_path):
    out, result = convert(tmp_path, "internvl", "iv.jsonl", "--dataset-name", "svit_ref")
    answer = lines(out)[0]["conversations"][1]["value"]
    assert answer == ("The <ref>wall</ref><box>[[50, 100, 950, 900]]</box> is made of red <ref>bricks</ref>"
                      "<box>[[100, 120, 300, 250], [310, 120, 520, 250]]</box> laid in rows.")
    meta = json.loads((tmp_path / "iv.meta.json").read_text())
    assert meta == {"svit_ref": {"root": str(IMAGES.absolute()) + "/", "annotation": str(out.absolute()),
                                 "data_augment": False, "repeat_time": 1, "length": 4}}
    _, result = convert(tmp_path, "internvl", "iv.json", check=None)
    assert_one_line_error(result, "iv.json", ".jsonl")
    assert not (tmp_path / "iv.json").exists() and not (tmp_path / "iv.meta.json.tmp").exists()


def test_internvl_round_trip_keeps_refs(tmp_path):
    first, _ = convert(tmp_path, "internvl", "a.jsonl", "--internvl-meta", "none")
    second, _ = convert(tmp_path, "internvl", "b.jsonl", "--internvl-meta", "none", source=first, reader="internvl")
    assert lines(first) == lines(second)
    assert not list(tmp_path.glob("*.meta.json"))


# --- LLaMA-Factory ------------------------------------------------------------------------------

TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
        "system_tag": "system"}


def test_llama_factory_dataset_info_is_written_and_merged(tmp_path):
    info = tmp_path / "dataset_info.json"
    info.write_text(json.dumps({"alpaca_en_demo": {"file_name": "alpaca_en_demo.json"}}))
    out, result = convert(tmp_path, "llama-factory", "svit_lf.json")
    merged = json.loads(info.read_text())
    assert merged["alpaca_en_demo"] == {"file_name": "alpaca_en_demo.json"}
    assert merged["svit_lf"] == {"file_name": "svit_lf.json", "formatting": "sharegpt",
                                 "columns": {"messages": "messages", "images": "images"}, "tags": TAGS}
    # SVIT's <st>/<ed> marks never reach a trainer that has no use for them
    assert "<st>" not in out.read_text() and "The wall [0.05, 0.1, 0.95, 0.9]" in out.read_text()
    info.write_text("{not json")
    _, result = convert(tmp_path, "llama-factory", "again.json", check=None)
    assert_one_line_error(result, "dataset_info.json", "--dataset-info")
    assert info.read_text() == "{not json" and not (tmp_path / "again.json").exists()
    convert(tmp_path, "llama-factory", "none.json", "--dataset-info", "none")
    assert info.read_text() == "{not json"


# --- ids, JSON Lines notes ----------------------------------------------------------------------

def _mixed_ids(tmp_path):
    records = load_json(FIXTURES / "llava_small.json")[:4]
    records[0]["id"], records[1]["id"] = 33471, "000000033471"
    source = tmp_path / "mixed.json"
    source.write_text(json.dumps(records))
    return source


def test_mixed_id_types_warn_and_ids_option_fixes_them(tmp_path):
    source = _mixed_ids(tmp_path)
    out, result = convert(tmp_path, "llava", "keep.json", source=source, reader="llava")
    assert "ids mix" not in result.stderr                 # LLaVA's trainer reads JSON itself: no noise
    assert [r["id"] for r in load_json(out)][:2] == [33471, "000000033471"]      # lossless by default
    out, result = convert(tmp_path, "llava", "str.json", "--ids", "string", source=source, reader="llava")
    assert "ids mix" not in result.stderr
    assert [r["id"] for r in load_json(out)][:2] == ["33471", "000000033471"]
    out, result = convert(tmp_path, "llama-factory", "keep_lf.json", "--ids", "keep", "--dataset-info", "none",
                          source=source, reader="llava")
    assert "ids mix integers (1)" in result.stderr and "--ids string" in result.stderr
    out, _ = convert(tmp_path, "llama-factory", "drop.json", "--ids", "drop", "--dataset-info", "none",
                     source=source, reader="llava")
    assert all("id" not in r for r in load_json(out))


def test_llava_jsonl_says_llava_reads_json_arrays(tmp_path):
    result = run_curate("convert", "llava", "llava", FIXTURES / "llava_small.json", "-o", tmp_path / "o.jsonl",
                        check=0)
    assert "reads only a JSON array" in result.stderr
    result = run_curate("convert", "llava", "llava", FIXTURES / "llava_small.json", "-o", tmp_path / "o.json",
                        check=0)
    assert "reads only a JSON array" not in result.stderr


# --- every writer's output loads in Hugging Face datasets ---------------------------------------

WRITERS = [("llava", "out.json"), ("sharegpt4v", "out.json"), ("internvl", "out.jsonl"),
           ("llama-factory", "out.json"), ("qwen-vl", "out.json"), ("ms-swift", "out.jsonl")]


@pytest.mark.parametrize("writer, name", WRITERS)
def test_every_writer_loads_in_hf_datasets(tmp_path, writer, name, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    svit, _ = convert(tmp_path, writer, "svit_" + name)
    mix, _ = convert(tmp_path, writer, "mix_" + name, "--ids", "string", "--on-error", "skip",
                     source=FIXTURES / "llava_small.json",
                     reader="llava")
    for path in (svit, mix):
        loaded = datasets.load_dataset("json", data_files=str(path), split="train")
        records = load_json(path) if path.suffix == ".json" else lines(path)
        assert len(loaded) == len(records) > 0
        assert loaded[0] == {key: records[0].get(key) for key in loaded.column_names}


def test_vit_cls_follows_hugging_faces_offline_switch(monkeypatch):
    """Downloads are Hugging Face's business: curate no longer forces HF_HUB_OFFLINE, and its
    error says which case it is."""
    import timm
    from curate.errors import CurateError
    from curate.plugins.timm_embedders import VitClsEmbedder

    def no_network(*args, **kwargs):
        raise OSError("could not connect")

    from curate.plugins import pretrained
    monkeypatch.setattr(timm, "create_model", no_network)
    monkeypatch.setattr(pretrained, "cached_weights", lambda name: None)
    monkeypatch.setattr(pretrained, "hub_unreachable", lambda: None)          # the hub answers, the download fails
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(CurateError, match="download failed: OSError"):
        VitClsEmbedder().load("vit_tiny_patch16_224", None, "cpu")
    monkeypatch.setattr(pretrained, "hub_unreachable", lambda: "https://huggingface.co cannot be reached (refused)")
    with pytest.raises(CurateError, match="cannot be reached"):
        VitClsEmbedder().load("vit_tiny_patch16_224", None, "cpu")
    import os
    assert "HF_HUB_OFFLINE" not in os.environ
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CurateError, match="HF_HUB_OFFLINE=1 turns downloads off"):
        VitClsEmbedder().load("vit_tiny_patch16_224", None, "cpu")
