"""Issue #22, typed options: a reader's or writer's setting is declared once (name, type,
default, help, allowed values) and that one declaration gives the command-line flag, -O
NAME=VALUE and the Python keyword, all checked the same way; two packages cannot declare one
setting; messages name a setting as the user typed it (a flag on the command line, a keyword
in Python)."""

import types

import pytest

import curate
from conftest import FIXTURES, assert_one_line_error, load_json, run_curate
from curate.plugins.llava import LlavaWriter

SMALL = FIXTURES / "llava_small.json"


class Repeating(LlavaWriter):
    """A writer with a typed setting: each sample written ``copies`` times."""

    name = "repeating"
    settings = (curate.Setting("copies", int, 1, minimum=1, maximum=5, help="repeating writer: copies of each sample"),)

    def write(self, samples, stream, options):
        copies = options.setting("copies")
        assert type(copies) is int
        return super().write((s for sample in samples for s in [sample] * copies), stream, options) // copies


def plugin(**hooks):
    return types.SimpleNamespace(**{name: curate.hookimpl(function) for name, function in hooks.items()})


def test_one_declaration_gives_the_flag_the_o_pair_and_the_keyword(registry_with, tmp_path):
    registry_with(plugin(register_writers=lambda register: register(Repeating)))
    assert "--copies" in run_curate("convert", "--help", check=0).stdout
    n = len(load_json(SMALL))
    for how in (["--copies", "3"], ["-O", "copies=3"]):
        out = tmp_path / f"{how[0].strip('-')}.json"
        run_curate("convert", "llava", "repeating", SMALL, "-o", out, "-q", *how, check=0)
        assert len(load_json(out)) == 3 * n
    curate.convert([SMALL], tmp_path / "api.json", "llava", "repeating", settings={"copies": 2})
    assert len(load_json(tmp_path / "api.json")) == 2 * n
    run_curate("convert", "llava", "repeating", SMALL, "-o", tmp_path / "default.json", "-q", check=0)
    assert len(load_json(tmp_path / "default.json")) == n                      # the declared default

    # Checked the same way wherever given; named as the user spells it.
    too_many = run_curate("convert", "llava", "repeating", SMALL, "-o", tmp_path / "x.json", "-O", "copies=9")
    assert_one_line_error(too_many, "--copies: must lie in 1..5, not 9")
    with pytest.raises(curate.CurateError, match=r"^copies: must be a whole number, not 'many'$"):
        curate.convert([SMALL], tmp_path / "y.json", "llava", "repeating", settings={"copies": "many"})
    flag = run_curate("convert", "llava", "repeating", SMALL, "-o", tmp_path / "z.json", "--copies", "9")
    assert flag.returncode == 2 and "Invalid value for '--copies'" in flag.stderr
    assert not any((tmp_path / name).exists() for name in ("x.json", "y.json", "z.json"))


def test_a_setting_no_component_of_the_run_takes_is_refused(tmp_path):
    result = run_curate("convert", "llava", "llava", SMALL, "-o", tmp_path / "o.json", "-O", "copies=3")
    assert_one_line_error(result, "no reader or writer of this run takes the setting 'copies'")
    with pytest.raises(curate.CurateError, match="takes the setting 'qwen_model'"):
        curate.convert([SMALL], tmp_path / "o.json", "llava", "llava", settings={"qwen_model": "qwen2-vl"})


def test_two_packages_cannot_declare_one_setting_nor_take_curates_own(registry_with):
    class Rival(LlavaWriter):
        name = "rival"
        settings = (curate.Setting("svit_task", help="a rival's idea of svit_task"),)

    class Seeded(LlavaWriter):
        name = "seeded"
        settings = (curate.Setting("seed", int, 0),)

    registry = registry_with(plugin(register_writers=lambda register: (register(Rival), register(Seeded))))
    assert "rival" not in registry.names("writer") and "seeded" not in registry.names("writer")
    warnings = " ".join(registry.warnings)
    assert "writer 'rival' from package '(registered in code)' declares the setting 'svit_task', which reader " \
           "'svit' from package 'curate' declares already" in warnings
    assert "declares the setting 'seed', one of curate's own options" in warnings


@pytest.mark.parametrize("declaration", [dict(type=list), dict(name="not a name")])
def test_a_setting_must_be_declared_with_a_name_and_a_type_curate_parses(declaration):
    with pytest.raises(ValueError):
        curate.Setting(**{"name": "fine", **declaration})


# --- stages and the run, in process (#22, item 6) ------------------------------------------------

class Halving(curate.Stage):
    """Keeps every other sample, says so in its tally."""

    name = "halving"

    def process(self, items, context):
        for n, item in enumerate(items):
            if n % 2:
                self.tally.removed += 1
            else:
                yield item

    def finish(self):
        self.tally.notes.append(f"halving removed {self.tally.removed}")


def test_a_run_composes_stages_and_adds_their_tallies_up(tmp_path):
    from curate.atomic import Outputs
    from curate.engine import Run
    inputs = curate.Inputs([SMALL], "llava")
    with Outputs(inputs.sources) as outputs:
        run = Run(inputs, tmp_path / "out.json", "llava", outputs)
        report = run.execute([Halving()])
    n = len(load_json(SMALL))
    assert (report.records_in, report.written, report.removed, report.rejected) == (n, (n + 1) // 2, n // 2, 0)
    assert f"halving removed {n // 2}" in report.notes
    assert len(load_json(tmp_path / "out.json")) == (n + 1) // 2


def test_a_filter_stage_writes_why_and_sets_rejects_aside_in_process(tmp_path):
    from curate.atomic import Outputs
    from curate.engine import Run

    class OddOut(curate.Filter):
        name = "odd-out"

        def decide(self, item):
            if item.number == 1:
                return curate.RecordError(item.path, "refused on purpose", index=item.number, field="id")
            return {"reason": "odd"} if item.number % 2 else None

    inputs = curate.Inputs([SMALL], "llava")
    with Outputs(inputs.sources) as outputs:
        run = Run(inputs, tmp_path / "out.json", "llava", outputs, on_error="skip")
        stage = OddOut(tmp_path / "removed.jsonl")
        report = run.execute([stage])
    n = len(load_json(SMALL))
    odd = n // 2
    assert (report.written, report.removed, report.rejected) == (n - odd, odd - 1, 1)
    removed = load_json(tmp_path / "removed.jsonl")
    assert {r["filter"] for r in removed} == {"odd-out"} and all(r["reason"] == "odd" for r in removed)
    assert "refused on purpose" in (tmp_path / "out.json.rejects.jsonl").read_text()
