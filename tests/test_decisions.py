"""Issue #22, decisions on disk: dedup writes one row per unique image, and `curate apply`
filters any input that names the same images with them: the same data in another format, or
a decisions file reviewed and edited by hand."""

import json

import pytest

from conftest import FIXTURES, assert_one_line_error, load_json, pip_installed, run_curate, summary_numbers, with_path

DEMO = FIXTURES / "dedup_demo.json"
IMAGES = FIXTURES / "images"


def write_decisions(path, rows):
    header = {"curate_decisions": 1, "threshold": 0.8, "verify": "content"}
    path.write_text("".join(json.dumps(row) + "\n" for row in [header, *rows]), encoding="utf-8")
    return path


def removal(image, of):
    return {"image": image, "decision": "remove", "duplicate_of": of, "signal": "embedding", "score": 0.95}


def llava(path, images):
    turns = [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A photo."}]
    path.write_text(json.dumps([{"id": f"s{i}", "image": image, "conversations": turns}
                                for i, image in enumerate(images)]), encoding="utf-8")
    return path


@pytest.mark.slow
def test_one_dedups_decisions_remove_the_same_samples_from_a_qwen_vl_export(tmp_path):
    out = tmp_path / "out.json"
    run_curate("dedup", DEMO, "-o", out, "--image-root", IMAGES, "--embedder", "timm-pool", "-t", "0.85",
               "--cache", tmp_path / "cache", check=0)
    decisions = tmp_path / "out.json.report" / "decisions.jsonl"
    removed_by_dedup = [row["id"] for row in load_json(tmp_path / "out.json.report" / "removed.jsonl")]
    assert removed_by_dedup                           # the demo has near-duplicates

    # Identify only: the same decisions, and no dataset or report.
    alone = tmp_path / "alone.jsonl"
    run_curate("dedup", DEMO, "-o", alone, "--image-root", IMAGES, "--embedder", "timm-pool", "-t", "0.85",
               "--cache", tmp_path / "cache", "--decisions-only", check=0)
    assert load_json(alone)[1:] == load_json(decisions)[1:]
    assert not (tmp_path / "alone.jsonl.report").exists()

    qwen = tmp_path / "qwen.jsonl"
    run_curate("convert", "llava", "qwen-vl", DEMO, "-o", qwen, "--image-root", IMAGES, check=0)
    kept = tmp_path / "qwen.dedup.jsonl"
    result = run_curate("apply", decisions, qwen, "-o", kept, check=0)
    removed = load_json(tmp_path / "qwen.dedup.jsonl.removed.jsonl")
    assert [row["id"] for row in removed] == removed_by_dedup
    assert [row["id"] for row in load_json(kept)] == [row["id"] for row in load_json(out)]
    assert summary_numbers(result.stderr)["removed"] == len(removed_by_dedup)


def test_a_hand_edit_is_honoured_and_no_picture_goes_with_all_its_copies(tmp_path):
    data = llava(tmp_path / "data.json", ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "new.jpg"])
    decisions = write_decisions(tmp_path / "decisions.jsonl", [
        {"image": "a.jpg", "decision": "keep"},
        {**removal("b.jpg", "a.jpg"), "decision": "keep"},     # reviewed: keep both
        removal("c.jpg", "a.jpg"),
        removal("d.jpg", "e.jpg"), removal("e.jpg", "d.jpg"),  # edited into a cycle: neither would stay
    ])
    out = tmp_path / "out.json"
    result = run_curate("apply", decisions, data, "-o", out, check=0)
    assert [r["image"] for r in load_json(out)] == ["a.jpg", "b.jpg", "d.jpg", "e.jpg", "new.jpg"]
    assert [(r["image"], r["duplicate_of"]) for r in load_json(tmp_path / "out.json.removed.jsonl")] == \
        [("c.jpg", "a.jpg")]
    assert "2 removals were not carried out" in result.stderr
    assert "1 images are not in the decisions" in " ".join(result.stderr.split())


@pytest.mark.parametrize("row, field", [({"image": "a.jpg", "decision": "maybe"}, "decision"),
                                        ({"decision": "keep"}, "image"),
                                        ({"image": "a.jpg", "decision": "remove"}, "duplicate_of")])
def test_a_row_that_is_not_a_decision_is_a_one_line_error(tmp_path, row, field):
    data = llava(tmp_path / "data.json", ["a.jpg"])
    decisions = write_decisions(tmp_path / "decisions.jsonl", [row])
    result = run_curate("apply", decisions, data, "-o", tmp_path / "out.json", check=1)
    assert_one_line_error(result, "decisions.jsonl", "record 1", f"field {field!r}")
    assert not (tmp_path / "out.json").exists()


def test_a_file_that_is_not_decisions_is_refused(tmp_path):
    data = llava(tmp_path / "data.json", ["a.jpg"])
    result = run_curate("apply", data, data, "-o", tmp_path / "out.json", check=1)
    assert_one_line_error(result, "data.json", "not a curate decisions file")


# --- filters are plugins (#22, item 2) ---------------------------------------------------------

EXAMPLE = FIXTURES.parent / "examples" / "curate-filter-example"


@pytest.fixture(scope="module")
def example_site(tmp_path_factory):
    """The example filter package, pip-installed for real into a folder put on PYTHONPATH."""
    return pip_installed(EXAMPLE, tmp_path_factory.mktemp("filter-site"))


@pytest.mark.slow
def test_the_example_filter_plugin_is_one_file_and_curate_filter_runs_it(example_site, tmp_path):
    from PIL import Image
    for name, size in (("big.jpg", (300, 240)), ("small.jpg", (300, 100)), ("tiny.jpg", (40, 40))):
        Image.new("RGB", size, "grey").save(tmp_path / name)
    data = llava(tmp_path / "data.json", ["big.jpg", "small.jpg", "tiny.jpg", "missing.jpg"])
    env = with_path(example_site)
    assert "min-side" in run_curate("plugins", env=env, check=0).stdout
    out = tmp_path / "out.json"
    result = run_curate("filter", data, "-o", out, "--image-root", tmp_path, "--filter", "min-side=200",
                        env=env, check=0)
    assert [r["image"] for r in load_json(out)] == ["big.jpg", "missing.jpg"]     # unreadable: not its question
    removed = load_json(tmp_path / "out.json.removed.jsonl")
    assert [(r["image"], r["filter"]) for r in removed] == [("small.jpg", "min-side"), ("tiny.jpg", "min-side")]
    assert removed[0]["reason"] == "300x100 pixels: a side under 200"
    assert summary_numbers(result.stderr) == {"input records": 4, "written": 2, "removed": 2, "rejected": 0}
    bad = run_curate("filter", data, "-o", tmp_path / "o2.json", "--image-root", tmp_path, "--filter",
                     "min-side=wide", env=env, check=1)
    assert_one_line_error(bad, "min-side", "'wide' is not a whole number of at least 1")
    assert not (tmp_path / "o2.json").exists()
    # its setting, declared once, is a flag and an -O pair too, checked the same way
    for how in (["--min-side-pixels", "200"], ["-O", "min_side_pixels=200"]):
        again = tmp_path / f"again{how[0]}.json"
        run_curate("filter", data, "-o", again, "--image-root", tmp_path, "--filter", "min-side", *how, env=env)
        assert [r["image"] for r in load_json(again)] == ["big.jpg", "missing.jpg"]
    zero = run_curate("filter", data, "-o", tmp_path / "o3.json", "--image-root", tmp_path, "--filter", "min-side",
                      "-O", "min_side_pixels=0", env=env, check=1)
    assert_one_line_error(zero, "--min-side-pixels: must be at least 1, not 0")


def test_curate_filter_without_a_filter_or_with_an_unknown_one_is_a_clean_error(tmp_path):
    data = llava(tmp_path / "data.json", ["a.jpg"])
    assert_one_line_error(run_curate("filter", data, "-o", tmp_path / "o.json", check=1),     # the defaults read images
                          "give --image-root")
    assert_one_line_error(run_curate("filter", data, "-o", tmp_path / "o.json", "--filter", "nope", check=1),
                          "unknown filter 'nope'")
