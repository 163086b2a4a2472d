"""One engine for convert and dedup: every reader option reaches dedup, outputs are claimed and
committed together, and writers are held to the samples they were given."""

import json
import shutil
import types

import pytest

import curate
from conftest import FIXTURES, assert_one_line_error, load_json, run_curate, summary_numbers

SVIT = FIXTURES / "svit"
IMAGES = FIXTURES / "images"


@pytest.fixture
def svit_parts(tmp_path):
    """Two SVIT conversation files whose names do not say the task (so it must be given)."""
    parts = []
    for k, name in enumerate(("conversation.json", "referring_qa.json")):
        part = tmp_path / f"part{k}.json"
        records = load_json(SVIT / name)
        for record in records:        # strip the referring markers: both parts are plain conversations
            for conversation in record["conversations"]:
                for turn in conversation["content"]:
                    turn["value"] = turn["value"].replace("<st>", "").replace("<ed>", "")
        part.write_text(json.dumps(records))
        parts.append(part)
    return parts


def svit_dedup(tmp_path, parts, *extra, name="dedup.json"):
    out = tmp_path / name
    result = run_curate("dedup", *parts, "-o", out, "--image-root", IMAGES, "--embedder", "timm-pool",
                        "--cache", tmp_path / "cache", "-t", "0.999", "-q", *extra)
    return out, result


@pytest.mark.slow
@pytest.mark.parametrize("task_option", [("--svit-task", "conversation"), ("-O", "svit_task=conversation")])
def test_dedup_reads_svit_as_convert_does_with_ids_across_files(tmp_path, svit_parts, task_option):
    _, result = svit_dedup(tmp_path, svit_parts)
    assert_one_line_error(result, "part0.json", "--svit-task")
    out, result = svit_dedup(tmp_path, svit_parts, *task_option, "--seed", "7")
    assert result.returncode == 0, result.stderr
    converted = tmp_path / "convert.json"
    run_curate("convert", "svit", "llava", *svit_parts, "-o", converted, "--image-root", IMAGES,
               *task_option, "--seed", "7", "-q", check=0)
    expected = load_json(converted)
    ids = [r["id"] for r in expected]
    assert ids == [f"svit_conversation_{n}" for n in range(len(ids))]   # continue from file to file
    assert len(ids) > len(load_json(svit_parts[0]))
    removed = [json.loads(line) for line in (tmp_path / "dedup.json.report" / "removed.jsonl").open()]
    kept_ids = {r["id"] for r in load_json(out)}
    assert kept_ids | {r["id"] for r in removed} == set(ids)
    assert [r for r in expected if r["id"] in kept_ids] == load_json(out)


@pytest.mark.slow
def test_dedup_seed_reaches_the_reader(tmp_path):
    """Referring QAs draw an instruction per question with --seed: dedup's output follows it."""
    outputs = {}
    for seed in ("0", "1"):
        out, result = svit_dedup(tmp_path, [SVIT / "referring_qa.json"], "--seed", seed, name=f"s{seed}.json")
        assert result.returncode == 0, result.stderr
        outputs[seed] = [r["conversations"][0]["value"] for r in load_json(out)]
    assert outputs["0"] != outputs["1"]


@pytest.mark.parametrize("command", ["convert", "dedup"])
def test_rejects_path_equal_to_an_input_is_refused(tmp_path, command):
    source = tmp_path / "in.json"
    shutil.copy(FIXTURES / "dedup_demo.json", source)
    before = source.read_bytes()
    args = ["convert", "llava", "llava"] if command == "convert" else \
        ["dedup", "--image-root", IMAGES, "--embedder", "timm-pool", "--no-cache"]
    result = run_curate(*args, source, "-o", tmp_path / "out.json", "--rejects", source, "--on-error", "skip")
    assert_one_line_error(result, "in.json", "also an input")
    assert source.read_bytes() == before
    assert not (tmp_path / "out.json").exists()


def test_dedup_outputs_that_collide_are_refused_before_any_work(tmp_path):
    report = tmp_path / "rep"
    result = run_curate("dedup", FIXTURES / "dedup_demo.json", "-o", report / "report.html", "--report", report,
                        "--image-root", IMAGES, "--embedder", "timm-pool", "--no-cache")
    assert_one_line_error(result, "report.html", "both the output and the report")
    assert not report.exists()
    source = tmp_path / "report.json"
    shutil.copy(FIXTURES / "dedup_demo.json", source)
    result = run_curate("dedup", source, "-o", tmp_path / "out.json", "--report", tmp_path,
                        "--image-root", IMAGES, "--embedder", "timm-pool", "--no-cache")
    assert_one_line_error(result, "report.json", "also an input")
    assert load_json(source) == load_json(FIXTURES / "dedup_demo.json")


def test_summary_table_accounts_for_every_record(tmp_path):
    bad = load_json(FIXTURES / "llava_small.json")
    bad[2]["conversations"] = []
    source = tmp_path / "bad.json"
    source.write_text(json.dumps(bad))
    result = run_curate("convert", "llava", "llava", source, "-o", tmp_path / "o.json", "--on-error", "skip",
                        check=0)
    assert summary_numbers(result.stderr) == {"input records": 9, "written": 8, "removed": 0, "rejected": 1}


def test_preview_draws_each_input_with_its_own_box_convention(tmp_path):
    out = tmp_path / "preview.html"
    run_curate("preview", SVIT / "referring_qa.json", FIXTURES / "llava_small.json", "-o", out,
               "--image-root", IMAGES, "--limit", "100", check=0)
    html = out.read_text()
    assert "svit_referring_0 <small>VG_100K; svit, boxes: original</small>" in html
    assert "000000033471 <small>coco; llava, boxes: padded</small>" in html


# --- plugins held to their contract --------------------------------------------------------------

def _plugin(**hooks):
    """A plugin object registered in code, with the given hook implementations."""
    module = types.ModuleType("test_plugin")
    for name, function in hooks.items():
        setattr(module, name, curate.hookimpl(function))
    return module


def test_hook_with_a_misnamed_parameter_is_a_warning_not_a_crash(registry_with):
    def register_readers(reg):        # pluggy wants `register`
        pass
    registry = registry_with(_plugin(register_readers=register_readers))
    assert any("could not be registered" in w and "reg" in w for w in registry.warnings)
    result = run_curate("formats", check=0)
    assert "llava" in result.stdout and "could not be registered" in result.stderr


def test_component_that_breaks_its_contract_is_named(registry_with, tmp_path):
    class NoRead:          # claims to be a reader but cannot read
        name = "broken-reader"

    def register_readers(register):
        register(NoRead)
    registry = registry_with(_plugin(register_readers=register_readers))
    assert any("reader 'broken-reader'" in w and "read() missing" in w for w in registry.warnings)
    result = run_curate("convert", "broken-reader", "llava", FIXTURES / "llava_small.json", "-o", tmp_path / "o.json")
    assert_one_line_error(result, "reader 'broken-reader'", "(registered in code)", "read() missing")


class _CountingWriter(curate.Writer):
    description = "test writer"

    def __init__(self, name, take, claim):
        self.name, self.take, self.claim = name, take, claim

    def write(self, samples, stream, options):
        taken = 0
        for sample in samples:
            stream.write(f"{sample.id}\n")
            taken += 1
            if taken == self.take:
                break
        return self.claim(taken)


@pytest.mark.parametrize("name, take, claim, message", [
    ("short", 3, lambda n: n, "stopped before taking every sample"),
    ("liar", None, lambda n: n + 1, "says it wrote 10"),
    ("stringy", None, str, "says it wrote '9'"),
])
def test_writer_that_loses_samples_fails_before_any_output_appears(registry_with, tmp_path, name, take, claim,
                                                                   message):
    def register_writers(register):
        register(_CountingWriter(name, take, claim))
    registry_with(_plugin(register_writers=register_writers))
    out = tmp_path / "o.txt"
    result = run_curate("convert", "llava", name, FIXTURES / "llava_small.json", "-o", out)
    assert_one_line_error(result, f"writer {name!r}", message)
    assert not out.exists() and not list(tmp_path.glob(".o.txt*"))


# --- the Python API ------------------------------------------------------------------------------

@pytest.mark.slow
def test_identify_duplicates_returns_a_typed_decision(tmp_path):
    inputs = curate.Inputs([FIXTURES / "dedup_demo.json"], image_root=IMAGES)
    found = curate.identify_duplicates(inputs, curate.EmbedderSpec("timm-pool"),
                                       curate.SearchSettings(thresholds=(0.85, 0.7)),
                                       curate.EmbedSettings(cache_dir=tmp_path / "cache"))
    assert isinstance(found, curate.Duplicates)
    assert [r.threshold for r in found.thresholds] == [0.85, 0.7]
    assert found.search.scope == "source" and found.settings()["dim"] == 1280
    removed_ids = {s.id for s in inputs.samples() if found.removal(s)}
    assert removed_ids == {"000000000002", "000000000004", 5}       # 3: the stereo pair, verified apart
    with pytest.raises(curate.CurateError, match="1.5"):
        curate.SearchSettings(thresholds=(1.5,))


def test_writer_that_closes_the_stream_is_named(registry_with, tmp_path):
    class Closer(curate.Writer):
        name = "closer"

        def write(self, samples, stream, options):
            count = sum(stream.write(f"{sample.id}\n") > 0 for sample in samples)
            stream.close()
            return count

    registry_with(_plugin(register_writers=lambda register: register(Closer)))
    out = tmp_path / "o.txt"
    result = run_curate("convert", "llava", "closer", FIXTURES / "llava_small.json", "-o", out)
    assert_one_line_error(result, "writer 'closer' from package '(registered in code)'", "closed the output stream")
    assert not out.exists() and not list(tmp_path.glob(".o.txt*"))


def test_a_repeated_id_of_a_megabyte_is_named_in_a_short_warning(tmp_path):
    """The duplicate-id warning names the first repeat, cut like every string from the data."""
    huge = "x" * 1_000_000
    turns = [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A."}]
    source = tmp_path / "in.json"
    source.write_text(json.dumps([{"id": huge, "image": "a.jpg", "conversations": turns}] * 2))
    result = run_curate("convert", "llava", "llava", source, "-o", tmp_path / "out.json", check=0)
    warning = next(line for line in result.stderr.splitlines() if "repeat an id" in line)
    assert "…" in result.stderr and len(result.stderr) < 5_000, len(result.stderr)
    assert warning
