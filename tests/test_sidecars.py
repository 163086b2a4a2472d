"""Sidecar files (LLaMA-Factory's dataset_info.json) merged by runs at once, numbers that
JSON spells but a float cannot hold, and names that are not UTF-8 (issue #27)."""

import json
import os
import subprocess

from conftest import CURATE, assert_one_line_error, run_curate

RECORD = {"messages": [{"role": "user", "content": "<image>What is it?"},
                       {"role": "assistant", "content": "A cat."}], "images": ["a.jpg"]}


def lf_input(tmp_path, count=2000):
    source = tmp_path / "in.json"
    source.write_text(json.dumps([RECORD] * count))
    return source


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
