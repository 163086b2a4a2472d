"""`curate convert`, `inspect`, `formats` from the command line, as a user runs them."""

import json
import os

import pytest

from conftest import FIXTURES, REAL, assert_one_line_error, load_json, needs_shared, run_curate, summary_numbers

REAL_LLAVA_FAMILY = ["llava_v1_5_mix665k.every500.json", "sharegpt4v_mix665k.every500.json",
                     "svit_mix_665k_llava_format.every500.json", "blip_laion_cc_sbu_558k.every500.json"]


@needs_shared
@pytest.mark.parametrize("name", REAL_LLAVA_FAMILY)
@pytest.mark.parametrize("reader", ["llava", "sharegpt4v", "auto"])
def test_real_files_round_trip_json_equal(tmp_path, name, reader):
    out = tmp_path / "out.json"
    run_curate("convert", reader, "llava", REAL / name, "-o", out, "-q", check=0)
    original, copy = load_json(REAL / name), load_json(out)
    assert copy == original
    # JSON equality treats 1 and 1.0 alike; ids must keep their exact type.
    assert [type(r["id"]) for r in copy] == [type(r["id"]) for r in original]
    assert sum(isinstance(r["id"], int) for r in copy) > 0 or "blip" in name


def test_fixture_round_trip_through_json_lines(tmp_path, llava_records):
    lines, back = tmp_path / "a.jsonl", tmp_path / "b.json"
    run_curate("convert", "llava", "sharegpt4v", FIXTURES / "llava_small.json", "-o", lines, "-q", check=0)
    assert len(lines.read_text().splitlines()) == len(llava_records)
    run_curate("convert", "auto", "llava", lines, "-o", back, "-q", check=0)
    assert load_json(back) == llava_records
    assert isinstance(load_json(back)[1]["id"], int)
    assert "image" not in load_json(back)[2]          # text-only stays text-only
    assert load_json(back)[8]["conversations"][1]["weight"] == 0.5   # unknown turn keys survive


def test_several_inputs_are_concatenated_in_order(tmp_path, llava_records):
    out = tmp_path / "out.json"
    run_curate("convert", "auto", "llava", FIXTURES / "llava_small.json", FIXTURES / "sharegpt4v_small.json",
               "-o", out, "-q", check=0)
    assert load_json(out) == llava_records + load_json(FIXTURES / "sharegpt4v_small.json")


def test_summary_accounts_for_every_record(tmp_path):
    result = run_curate("convert", "llava", "llava", FIXTURES / "llava_small.json", "-o", tmp_path / "o.json",
                        check=0)
    assert summary_numbers(result.stderr) == {"input records": 9, "written": 9, "removed": 0, "rejected": 0}


def test_refuses_existing_output_unless_overwrite(tmp_path):
    out = tmp_path / "out.json"
    out.write_text("old")
    result = run_curate("convert", "llava", "llava", FIXTURES / "llava_small.json", "-o", out)
    assert_one_line_error(result, str(out), "--overwrite")
    assert out.read_text() == "old"
    run_curate("convert", "llava", "llava", FIXTURES / "llava_small.json", "-o", out, "--overwrite", "-q", check=0)
    assert len(load_json(out)) == 9


def test_never_writes_over_an_input(tmp_path):
    source = tmp_path / "in.json"
    source.write_bytes((FIXTURES / "llava_small.json").read_bytes())
    before = source.read_bytes()
    result = run_curate("convert", "llava", "llava", source, "-o", source, "--overwrite")
    assert_one_line_error(result, "also an input")
    link = tmp_path / "link.json"
    os.symlink(source, link)
    result = run_curate("convert", "llava", "llava", source, "-o", link, "--overwrite")
    assert_one_line_error(result, "also an input")
    assert source.read_bytes() == before


def test_unwritable_output_folder(tmp_path):
    """A folder below a regular file cannot be written, by root either."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_curate("convert", "llava", "llava", FIXTURES / "llava_small.json", "-o", blocker / "sub" / "o.json")
    assert_one_line_error(result, "o.json", "cannot write there", "is not a folder")
    assert blocker.read_text() == "x"


def test_output_folder_that_cannot_be_created(tmp_path):
    result = run_curate("convert", "llava", "llava", FIXTURES / "llava_small.json", "-o", "/proc/curate/o.json")
    assert_one_line_error(result, "/proc/curate/o.json", "cannot write")


def test_output_folder_that_is_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_curate("convert", "llava", "llava", FIXTURES / "llava_small.json", "-o", blocker / "o.json")
    assert_one_line_error(result, "o.json", "is not a folder")


def test_unknown_format_lists_installed_ones(tmp_path):
    result = run_curate("convert", "nope", "llava", FIXTURES / "llava_small.json", "-o", tmp_path / "o.json")
    assert_one_line_error(result, "unknown reader 'nope'", "llava")
    assert not (tmp_path / "o.json").exists()


def test_missing_input(tmp_path):
    result = run_curate("convert", "llava", "llava", tmp_path / "nope.json", "-o", tmp_path / "o.json")
    assert_one_line_error(result, "nope.json", "no such file")


def _bad_file(tmp_path):
    records = load_json(FIXTURES / "llava_small.json")
    records[3]["conversations"] = []
    records[5] = ["not", "an", "object"]
    records[6]["conversations"][1]["value"] = 42
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(records))
    return path


def test_bad_record_fails_with_file_record_and_field_and_no_output(tmp_path):
    out = tmp_path / "o.json"
    result = run_curate("convert", "llava", "llava", _bad_file(tmp_path), "-o", out)
    assert_one_line_error(result, "bad.json", "record 3", "'000000215677'", "conversations")
    assert not out.exists()
    assert not list(tmp_path.glob(".o.json*"))  # no temporary file left behind


def test_on_error_skip_sets_bad_records_aside_with_reasons(tmp_path):
    out = tmp_path / "o.json"
    result = run_curate("convert", "llava", "llava", _bad_file(tmp_path), "-o", out, "--on-error", "skip")
    assert result.returncode == 0, result.stderr
    assert len(load_json(out)) == 6
    rejects = load_json(tmp_path / "o.json.rejects.jsonl")
    assert [r["index"] for r in rejects] == [3, 5, 6]
    assert rejects[2]["field"] == "conversations[1].value" and rejects[2]["id"] == "textvqa_1"
    assert rejects[1]["record"] == ["not", "an", "object"]
    assert summary_numbers(result.stderr) == {"input records": 9, "written": 6, "removed": 0, "rejected": 3}


def test_help_documents_every_option():
    result = run_curate("convert", "--help", check=0)
    for option in ("--output", "--overwrite", "--on-error", "--rejects", "--image-root", "--image-prefix",
                   "--seed", "--option", "--quiet"):
        assert option in result.stdout
    for command in ("convert", "inspect", "formats", "plugins"):
        assert command in run_curate("--help", check=0).stdout
        run_curate(command, "--help", check=0)


def test_image_prefix_completes_bare_file_names(tmp_path):
    source = tmp_path / "instruct.json"
    source.write_text(json.dumps([{"id": "000000033471", "image": "000000033471.jpg", "conversations": [
        {"from": "human", "value": "<image>\nHi"}, {"from": "gpt", "value": "Hello"}]}]))
    out = tmp_path / "o.json"
    run_curate("convert", "llava", "llava", source, "-o", out, "--image-prefix", "coco/train2017", "-q", check=0)
    assert load_json(out)[0]["image"] == "coco/train2017/000000033471.jpg"


def test_inspect_counts_per_source():
    result = run_curate("inspect", FIXTURES / "llava_small.json", "--json", check=0)
    rows = {row.get("source"): row for row in json.loads(result.stdout)}
    assert rows[None] == {"rejected": 0}
    assert rows["coco"]["samples"] == 3 and rows["coco"]["unique_images"] == 2
    assert rows["text-only"]["text_only"] == 1
    assert rows["total"]["samples"] == 9 and rows["total"]["turns"] == 20
    assert rows["total"]["placement"] == {"prefix": 6, "suffix": 1, "middle": 1, "none": 1}
    table = run_curate("inspect", FIXTURES / "llava_small.json", check=0).stdout
    assert "VG_100K_2" in table and "middle" in table


@needs_shared
def test_inspect_real_mix():
    result = run_curate("inspect", REAL / "llava_v1_5_mix665k.every500.json", "--json", check=0)
    rows = {row.get("source"): row for row in json.loads(result.stdout)}
    assert rows["total"]["samples"] == 1331
    assert rows["text-only"]["samples"] == 81
    assert rows["gqa"]["samples"] == 144


def test_formats_lists_bundled_formats_with_their_package():
    out = run_curate("formats", check=0).stdout
    assert "llava" in out and "sharegpt4v" in out and "curate" in out
