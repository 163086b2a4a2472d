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
