"""Issue #22, typed options: a reader's or writer's setting is declared once (name, type,
default, help, allowed values) and that one declaration gives the command-line flag, -O
NAME=VALUE and the Python keyword, all checked the same way; two packages cannot declare one
setting; messages name a setting as the user typed it (a flag on the command line, a keyword
in Python)."""

import json
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


# --- every component kind declares its settings the same way (#22, item 3) -----------------------

DEMO = FIXTURES / "dedup_demo.json"
LOADED, BUILT = [], []         # what the stand-in embedder and index were given


class _Model(curate.LoadedEmbedder):
    """Embeds an image as its mean colour's direction, rounded to ``bits`` (a setting that changes
    the vectors, so it is part of the cache key)."""

    embedder, model_name, dim = "rounded", "rounded", 3

    def __init__(self, bits):
        self.bits, self.weights_digest = bits, f"bits={bits}"

    def preprocess(self, image):
        import numpy as np
        return np.asarray(image.resize((4, 4)), np.uint8).reshape(-1, 3).mean(axis=0).astype(np.float32)

    def embed(self, batch):
        import numpy as np
        steps = 2 ** self.bits
        vectors = np.round(batch / 255 * steps) + 1.0
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


class Rounded(curate.Embedder):
    name, description = "rounded", "mean colour, rounded"
    settings = (curate.Setting("rounded_bits", int, 8, minimum=1, maximum=16, help="rounded embedder: bits per channel"),)

    def load(self, model, weights, device, rounded_bits):
        LOADED.append(rounded_bits)
        return _Model(rounded_bits)


def _recorded_index():
    from curate.plugins.indexes import Exact

    class Recorded(Exact):
        name, description = "recorded", "exact, recording its setting"
        settings = (curate.Setting("recorded_width", int, 4, minimum=1, maximum=64, help="recorded index: a width"),)

        def new(self, dim, capacity, recorded_width):
            BUILT.append(recorded_width)
            return super().new(dim, capacity)

    return Recorded


def _dedup(tmp_path, name, *extra, check=None):
    return run_curate("dedup", DEMO, "-o", tmp_path / name, "--image-root", FIXTURES / "images", "--embedder",
                      "rounded", "--index", "recorded", "--signals", "embedding", "--verify", "none", "--no-cache",
                      "-q", *extra, check=check)


def test_an_embedder_and_an_index_declare_typed_settings_as_a_reader_does(registry_with, tmp_path):
    registry_with(plugin(register_embedders=lambda register: register(Rounded),
                         register_indexes=lambda register: register(_recorded_index())))
    dedup_help, embed_help = (run_curate(command, "--help", check=0).stdout for command in ("dedup", "embed"))
    assert "--rounded-bits" in dedup_help and "--recorded-width" in dedup_help and "--hnsw-ef" in dedup_help
    assert "--rounded-bits" in embed_help and "--recorded-width" not in embed_help

    LOADED.clear(), BUILT.clear()
    _dedup(tmp_path, "flags.json", "--rounded-bits", "3", "-O", "recorded_width=7", check=0)
    assert LOADED == [3] and set(BUILT) == {7}
    assert json.loads((tmp_path / "flags.json.report" / "report.json").read_text())["settings"]["index_options"] \
        == {"recorded_width": 7}
    LOADED.clear(), BUILT.clear()
    _dedup(tmp_path, "defaults.json", check=0)
    assert LOADED == [8] and set(BUILT) == {4}                             # the declared defaults
    LOADED.clear(), BUILT.clear()
    inputs = curate.Inputs([DEMO], image_root=FIXTURES / "images", settings={"rounded_bits": "5", "recorded_width": 2})
    curate.dedup(inputs, tmp_path / "api.json", embedder=curate.EmbedderSpec("rounded"),
                 search=curate.SearchSettings(index="recorded", signals=("embedding",), verify="none"))
    assert LOADED == [5] and set(BUILT) == {2}

    # Checked the same way wherever given, before any work; named as the user spells it.
    assert_one_line_error(_dedup(tmp_path, "x.json", "-O", "rounded_bits=99"), "--rounded-bits: must lie in 1..16, not 99")
    flag = _dedup(tmp_path, "y.json", "--recorded-width", "0")
    assert flag.returncode == 2 and "Invalid value for '--recorded-width'" in flag.stderr
    assert_one_line_error(_dedup(tmp_path, "z.json", "-O", "recorded_widht=3"),
                          "no reader, writer, embedder or index of this run takes the setting 'recorded_widht'")
    with pytest.raises(curate.CurateError, match=r"^rounded_bits: must be a whole number, not 'many'$"):
        curate.embed(curate.Inputs([DEMO], image_root=FIXTURES / "images", settings={"rounded_bits": "many"}),
                     curate.EmbedderSpec("rounded"), signals=[])
    assert not any((tmp_path / name).exists() for name in ("x.json", "y.json", "z.json"))


def test_an_index_setting_that_clashes_with_another_packages_is_refused_naming_both(registry_with):
    from curate.plugins.indexes import Exact

    class Rival(Exact):
        name = "rival"
        settings = (curate.Setting("hnsw_m", float, 1.0, help="a rival's idea of hnsw_m"),)

    registry = registry_with(plugin(register_indexes=lambda register: register(Rival),
                                    register_embedders=lambda register: register(Rounded)))
    assert "rival" not in registry.names("index") and "rounded" in registry.names("embedder")
    assert "index 'rival' from package '(registered in code)' declares the setting 'hnsw_m', which index " \
           "'hnsw' from package 'curate' declares already" in " ".join(registry.warnings)


def test_a_signal_and_a_verifier_get_their_typed_settings_in_values(registry_with, tmp_path):
    import numpy as np
    seen = {"signal": set(), "verifier": set()}

    class Channel(curate.Signal):
        name, description, dim, unit, default = "channel", "one colour channel's mean", 2, "similarity", 0.999
        settings = (curate.Setting("channel_index", int, 0, minimum=0, maximum=2, help="channel signal: R, G or B"),)

        def fingerprint(self, image, path):
            seen["signal"].add(self.values["channel_index"])
            mean = np.asarray(image, np.float32)[..., self.values["channel_index"]].mean() / 255
            vector = np.array([mean, 1 - mean], np.float32) + 1e-3
            return vector / np.linalg.norm(vector)

    class Margin(curate.Verifier):
        name, description = "margin", "agrees when the signals do"
        settings = (curate.Setting("margin_score", float, 0.5, minimum=0, maximum=1, help="margin verifier: its score"),)

        def prepare(self, path):
            return path

        def compare(self, kept, candidate):
            seen["verifier"].add(self.values["margin_score"])
            return curate.Verdict(True, self.values["margin_score"])

    registry = registry_with(plugin(register_embedders=lambda register: register(Rounded),
                                    register_signals=lambda register: register(Channel),
                                    register_verifiers=lambda register: register(Margin)))
    assert registry.get("signal", "channel").values == {"channel_index": 0}      # defaults until a run's own
    assert registry.get("verifier", "margin").values == {"margin_score": 0.5}
    help_text = run_curate("dedup", "--help", check=0).stdout
    assert "--channel-index" in help_text and "--margin-score" in help_text
    run_curate("dedup", DEMO, "-o", tmp_path / "out.json", "--image-root", FIXTURES / "images", "--embedder", "rounded",
               "--signals", "embedding,channel", "--verify", "margin", "--cache", tmp_path / "cache", "-q",
               "--channel-index", "2", "-O", "margin_score=0.25", check=0)
    assert seen == {"signal": {2}, "verifier": {0.25}}
    folders = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert any(name.startswith("signal-channel") for name in folders), folders
    meta = [json.loads((tmp_path / "cache" / name / "meta.json").read_text()) for name in folders
            if name.startswith("signal-channel")]
    assert meta and "channel_index=2" in meta[0]["weights_digest"]        # its setting keys its cache
    result = run_curate("dedup", DEMO, "-o", tmp_path / "bad.json", "--image-root", FIXTURES / "images", "--embedder",
                        "rounded", "--signals", "embedding,channel", "--verify", "margin", "-O", "channel_index=3")
    assert_one_line_error(result, "--channel-index: must lie in 0..2, not 3")


def test_the_partitioned_index_takes_its_products_from_the_command_line(tmp_path):
    """--partition-products reaches the index (below its training size the exact index answers:
    the same output), and a value it does not know is refused in one line."""
    def run(name, *extra, check=None):
        return run_curate("dedup", DEMO, "-o", tmp_path / name, "--image-root", FIXTURES / "images", "--embedder",
                          "timm-pool", "--index", "partitioned", "--signals", "embedding", "--verify", "none",
                          "--no-cache", "-q", *extra, check=check)
    assert "--partition-products" in run_curate("dedup", "--help", check=0).stdout
    run("auto.json", check=0)
    run("half.json", "--partition-products", "float16", check=0)
    assert (tmp_path / "half.json").read_bytes() == (tmp_path / "auto.json").read_bytes()
    assert_one_line_error(run("bad.json", "-O", "partition_products=float8"),
                          "--partition-products: must be one of auto, float32, float16, bfloat16, not 'float8'")
