"""The Python API mirrors the CLI."""

import json

import pytest

import curate
from conftest import FIXTURES, load_json


def test_read_is_lazy_and_yields_samples():
    samples = curate.read(FIXTURES / "llava_small.json")
    first = next(samples)
    assert isinstance(first, curate.Sample)
    assert first.id == "000000033471" and first.source == "coco"
    assert first.conversations[0].role == "human"


def test_write_then_read_back(tmp_path, llava_records):
    out = tmp_path / "o.jsonl"
    n = curate.write(curate.read(FIXTURES / "llava_small.json", "llava"), out, "llava")
    assert n == 9 and load_json(out) == llava_records
    with pytest.raises(curate.CurateError, match="the output exists; pass overwrite to replace it") as caught:
        curate.write([], out)                    # the Python API names its keyword; the command line its flag
    assert caught.value.for_command_line().endswith("pass --overwrite to replace it")


def test_convert_returns_a_report(tmp_path):
    report = curate.convert([FIXTURES / "llava_small.json"], tmp_path / "o.json", "auto", "sharegpt4v")
    assert (report.records_in, report.written, report.rejected, report.removed) == (9, 9, 0, 0)
    assert report.reader == "llava" and report.writer == "sharegpt4v"


def test_read_raises_record_errors(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"id": 1, "conversations": "nope"}]))
    with pytest.raises(curate.RecordError) as info:
        list(curate.read(path, "llava"))
    assert info.value.field == "conversations" and info.value.record_id == 1
    assert list(curate.read(path, "llava", on_error="skip")) == []


def test_samples_built_in_code_can_be_written(tmp_path):
    sample = curate.Sample("x1", "coco/train2017/1.jpg",
                           [curate.Turn("human", "<image>\nWhat is it?"), curate.Turn("gpt", "A cat.")])
    curate.write([sample], tmp_path / "o.json")
    assert load_json(tmp_path / "o.json")[0]["conversations"][1] == {"from": "gpt", "value": "A cat."}


def test_write_goes_through_the_stages_of_convert(tmp_path):
    """curate.write and curate convert give the same file: SVIT's boxes re-padded (boxes_from),
    ids by the writer's default policy, the writer's sidecars."""
    svit = FIXTURES / "svit" / "referring_qa.json"
    images = FIXTURES / "images"
    by_command = curate.convert([svit], tmp_path / "cli.json", "svit", "llava", image_root=images)
    samples = curate.read(svit, "svit", image_root=images)
    assert curate.write(samples, tmp_path / "api.json", "llava", boxes_from="svit", image_root=images) \
        == by_command.written == 4
    assert (tmp_path / "api.json").read_bytes() == (tmp_path / "cli.json").read_bytes()
    # the caller's samples are left as they were: written again, they give the same file
    samples = list(curate.read(svit, "svit", image_root=images))
    texts = [[turn.text for turn in sample.conversations] for sample in samples]
    curate.write(samples, tmp_path / "first.json", "llava", boxes_from="svit", image_root=images)
    curate.write(samples, tmp_path / "again.json", "llava", boxes_from="svit", image_root=images)
    assert [[turn.text for turn in sample.conversations] for sample in samples] == texts
    assert (tmp_path / "again.json").read_bytes() == (tmp_path / "api.json").read_bytes()
    # without boxes_from the boxes are written as the samples hold them (SVIT's own, not padded)
    curate.write(curate.read(svit, "svit", image_root=images), tmp_path / "raw.json", "llava")
    assert load_json(tmp_path / "raw.json") != load_json(tmp_path / "api.json")


def test_write_gives_a_datasets_trainer_loadable_ids_and_its_sidecar(tmp_path):
    samples = [curate.Sample(7, "coco/1.jpg", [curate.Turn("human", "<image>\nWhat?"), curate.Turn("gpt", "A cat.")]),
               curate.Sample("x", "coco/2.jpg", [curate.Turn("human", "<image>\nAnd?"), curate.Turn("gpt", "A dog.")])]
    out = tmp_path / "lf.json"
    assert curate.write(samples, out, "llama-factory") == 2
    assert [r["id"] for r in load_json(out)] == ["7", "x"]          # mixed ids would not load in datasets
    assert "lf" in load_json(tmp_path / "dataset_info.json")
    curate.write(samples, tmp_path / "keep.json", "llama-factory", ids="keep")
    assert [r["id"] for r in load_json(tmp_path / "keep.json")] == [7, "x"]


def test_write_refuses_what_is_not_a_sample(tmp_path):
    with pytest.raises(curate.CurateError, match="takes curate.Sample objects, not a dict"):
        curate.write([{"id": 1}], tmp_path / "o.json")
    assert not (tmp_path / "o.json").exists()
