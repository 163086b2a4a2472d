"""Sidecar files (LLaMA-Factory's dataset_info.json) merged by runs at once, numbers that
JSON spells but a float cannot hold, and names that are not UTF-8 (issue #27)."""

import json
import os
import subprocess

import pytest

from conftest import CURATE, assert_one_line_error, run_curate

RECORD = {"messages": [{"role": "user", "content": "<image>What is it?"},
                       {"role": "assistant", "content": "A cat."}], "images": ["a.jpg"]}


def lf_input(tmp_path, count=2000):
    source = tmp_path / "in.json"
    source.write_text(json.dumps([RECORD] * count))
    return source


@pytest.mark.slow
def test_concurrent_merges_keep_every_entry(tmp_path):
    source = lf_input(tmp_path)
    info = tmp_path / "dataset_info.json"
    info.write_text('{"mine": {"file_name": "mine.json"}}\n')
    runs = [subprocess.Popen([*CURATE, "convert", "llama-factory", "llama-factory", str(source), "-q",
                              "-o", str(tmp_path / f"part{i}.json")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for i in range(8)]
    results = [run.communicate() + (run.returncode,) for run in runs]
    assert [code for _, _, code in results] == [0] * 8, results
    merged = json.loads(info.read_text(encoding="utf-8"))
    assert set(merged) == {"mine", *(f"part{i}" for i in range(8))}
    assert merged["part3"]["file_name"] == "part3.json"


def strict_json(text):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_a_merge_keeps_the_other_entries_text_as_it_was(tmp_path):
    info = tmp_path / "dataset_info.json"
    other = '{\n    "other": {"file_name": "x.json", "big": 1e999, "ratio": 1.10}\n}\n'
    info.write_text(other)
    run_curate("convert", "llama-factory", "llama-factory", lf_input(tmp_path, 1), "-o", tmp_path / "mine.json",
               check=0)
    text = info.read_text(encoding="utf-8")
    assert text.startswith('{\n    "other": {"file_name": "x.json", "big": 1e999, "ratio": 1.10}')
    assert set(strict_json(text)) == {"other", "mine"}        # valid JSON: no Infinity, no NaN
    run_curate("convert", "llama-factory", "llama-factory", lf_input(tmp_path, 1), "-o", tmp_path / "mine.json",
               "--overwrite", check=0)
    assert info.read_text(encoding="utf-8") == text           # merging the same entry again changes nothing


def test_a_dataset_info_with_nan_is_refused_not_rewritten(tmp_path):
    info = tmp_path / "dataset_info.json"
    info.write_text('{"other": {"file_name": "x.json", "weight": NaN}}')
    result = run_curate("convert", "llama-factory", "llama-factory", lf_input(tmp_path, 1),
                        "-o", tmp_path / "mine.json")
    assert_one_line_error(result, "dataset_info.json", "NaN is not valid JSON")
    assert info.read_text() == '{"other": {"file_name": "x.json", "weight": NaN}}'
    assert not (tmp_path / "mine.json").exists()


def test_curate_never_writes_nan_infinity_or_a_null_for_them():
    from curate.jsonstream import NOT_FINITE, dumps
    for value in (float("inf"), float("-inf"), float("nan")):
        for indent in (None, 2):
            try:
                text = dumps({"score": [1, value]}, indent=indent)
            except ValueError as e:
                assert str(e) == NOT_FINITE
            else:
                raise AssertionError(f"wrote {text}")
    assert json.loads(dumps({"a": None, "big": 2 ** 70})) == {"a": None, "big": 2 ** 70}


def run_bytes(*args):
    """The CLI in a subprocess with raw bytes in argv, as a Latin-1 shell passes them."""
    argv = [os.fsencode(a) if not isinstance(a, bytes) else a for a in (*CURATE, *args)]
    return subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, COLUMNS="200"))


@pytest.mark.parametrize("option", ["--dataset-name", "--output", "--image-root", "INPUTS"])
def test_names_that_are_not_utf8_are_a_clean_error_naming_the_option(tmp_path, option):
    source, out = lf_input(tmp_path, 1), tmp_path / "out.json"
    latin1 = os.fsencode(tmp_path) + b"/caf\xe9"
    (tmp_path / os.fsdecode(latin1)).mkdir()
    args = {"--dataset-name": ["--dataset-name", b"caf\xe9"], "--output": [],
            "--image-root": ["--image-root", latin1], "INPUTS": []}[option]
    inputs = [latin1 + b".json"] if option == "INPUTS" else [source]
    if option == "INPUTS":
        source.rename(os.fsdecode(inputs[0]))
    output = latin1 + b".json.out.json" if option == "--output" else out
    result = run_bytes("convert", "llama-factory", "llama-factory", *inputs, "-o", output, *args)
    assert_one_line_error(result, f"{option}: ", "caf\\xe9", "not UTF-8")
    assert not out.exists() and not (tmp_path / "dataset_info.json").exists()


def test_a_newline_in_a_file_name_keeps_the_error_on_one_line(tmp_path):
    source = tmp_path / "bad\nname.json"
    source.write_text('[{"messages": 3}]')
    result = run_curate("convert", "llama-factory", "llama-factory", source, "-o", tmp_path / "out.json")
    assert_one_line_error(result, "bad\\nname.json: record 0", "field 'messages'")
