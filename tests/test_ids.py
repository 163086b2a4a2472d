"""Issue #27: ids are JSON scalars. An object or list id is a record error (a one-line error,
or a reject with its reason under --on-error skip) in every --ids mode; --ids string writes
every other id as a string, numbers and booleans as JSON spells them."""

import json

import pytest

from conftest import assert_one_line_error, load_json, run_curate, summary_numbers

TURNS = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
IDS = [1.5, True, {"a": 1}, [1], "x", 7]


@pytest.fixture
def odd_ids(tmp_path):
    source = tmp_path / "lf.json"
    source.write_text(json.dumps([{"id": i, "messages": TURNS} for i in IDS]))
    return source


def convert(source, out, *args):
    return run_curate("convert", "llama-factory", "llava", source, "-o", out, *args)


def test_an_object_id_is_a_one_line_record_error(tmp_path, odd_ids):
    out = tmp_path / "out.json"
    for mode in ("keep", "string", "drop"):
        result = convert(odd_ids, out, "--ids", mode)
        assert_one_line_error(result, str(odd_ids), "record 2", "field 'id'", "JSON object")
        assert not out.exists()


@pytest.mark.parametrize("mode, written", [("keep", [1.5, True, "x", 7]), ("string", ["1.5", "true", "x", "7"]),
                                           ("drop", [None] * 4)])
def test_skipped_object_and_list_ids_are_rejected_with_their_reason(tmp_path, odd_ids, mode, written):
    out = tmp_path / "out.json"
    result = convert(odd_ids, out, "--ids", mode, "--on-error", "skip")
    assert result.returncode == 0, result.stderr
    assert [r.get("id") for r in load_json(out)] == written
    rejects = load_json(tmp_path / "out.json.rejects.jsonl")
    assert [(r["index"], r["field"], r["record"]["id"]) for r in rejects] == [(2, "id", {"a": 1}), (3, "id", [1])]
    assert "JSON array" in rejects[1]["reason"]
    assert summary_numbers(result.stderr) == {"input records": 6, "written": 4, "removed": 0, "rejected": 2}


def test_kept_ids_of_several_types_warn_naming_each(tmp_path, odd_ids):
    # only where the output's trainer loads through Hugging Face datasets (LLaMA-Factory)
    result = run_curate("convert", "llama-factory", "llama-factory", odd_ids, "-o", tmp_path / "out.json",
                        "--ids", "keep", "--on-error", "skip", "--dataset-info", "none")
    assert "ids mix integers (1), strings (1), fractional numbers (1) and booleans (1)" in " ".join(result.stderr.split())
    result = convert(odd_ids, tmp_path / "out.json", "--on-error", "skip", "--overwrite")
    assert "ids mix" not in result.stderr
