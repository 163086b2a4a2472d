"""A hostile user: every attack ends in a clean one-line error or a clean, accounted-for
success; no input is ever written; no temporary file survives."""

import json
import os
import random
import signal
import subprocess
import time
import types
from pathlib import Path

import numpy as np
import pytest

import curate
from conftest import CURATE, FIXTURES, REAL, assert_one_line_error, load_json, run_curate, summary_numbers

IMAGES = FIXTURES / "images"
TURNS = [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cat."}]


def records_file(tmp_path, text, name="in.json"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- data loss -----------------------------------------------------------------------------------

def test_piped_input_is_read_whole(tmp_path):
    """`curate convert llava llava <(cat x.jsonl)`: sniffing must not eat the pipe's head."""
    lines = "".join(json.dumps({"id": f"r{i}", "conversations": [{"from": "human", "value": "hi"},
                                                                 {"from": "gpt", "value": "x" * 200}]})
                    + "\n" for i in range(2000))
    source = records_file(tmp_path, lines, "x.jsonl")
    out = tmp_path / "o.json"
    command = f"{' '.join(CURATE)} convert auto llava <(cat {source}) -o {out} -q --on-error skip"
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len(load_json(out)) == 2000


def test_fifo_without_a_writer_does_not_hang(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = run_curate("convert", "llava", "llava", fifo, "-o", tmp_path / "o.json", subprocess_=True, timeout=60)
    assert_one_line_error(result, "empty")


@pytest.mark.parametrize("value, fragment", [
    ("1e999", "too large for a 64-bit float"),
    ('"x \\ud800"', "lone surrogate"),
])
def test_values_that_would_change_on_the_way_out_are_rejected(tmp_path, value, fragment):
    source = records_file(tmp_path, f'[{{"id": "a", "n": {value}, "conversations": {json.dumps(TURNS)}}}]')
    result = run_curate("convert", "llava", "llava", source, "-o", tmp_path / "o.json")
    assert_one_line_error(result, "in.json", "record 0", fragment)
    result = run_curate("convert", "llava", "llava", source, "-o", tmp_path / "o.json", "--on-error", "skip",
                        check=0)
    assert summary_numbers(result.stderr)["rejected"] == 1


def test_paired_surrogates_are_an_emoji_not_an_error(tmp_path):
    turns = [{"from": "human", "value": "hi \\ud83d\\ude00"}, {"from": "gpt", "value": "ok"}]
    source = records_file(tmp_path, '[{"id": "a", "conversations": ' + json.dumps(turns).replace("\\\\", "\\") + "}]")
    run_curate("convert", "llava", "llava", source, "-o", tmp_path / "o.json", "-q", check=0)
    assert load_json(tmp_path / "o.json")[0]["conversations"][0]["value"] == "hi 😀"


def test_deep_nesting_is_a_clean_error(tmp_path):
    source = records_file(tmp_path, "[" + "[" * 100_000 + "]" * 100_000 + "]")
    assert_one_line_error(run_curate("convert", "llava", "llava", source, "-o", tmp_path / "o.json"),
                          "nested too deeply")


# --- outputs that are not regular files ----------------------------------------------------------

def test_output_that_is_a_device_or_a_link_to_one_is_refused(tmp_path):
    link = tmp_path / "null.json"
    link.symlink_to("/dev/null")
    for target in ("/dev/null", link):
        result = run_curate("convert", "llava", "llava", FIXTURES / "llava_small.json", "-o", target, "--overwrite")
        assert_one_line_error(result, "not a regular file")
    assert link.is_symlink() and os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


# --- escapes -------------------------------------------------------------------------------------

def test_symlinks_out_of_the_image_root_are_not_followed(tmp_path):
    from curate.images import ImageLocator, UnreadableImage
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "coco").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.jpg").write_bytes((IMAGES / "coco/train2017/000000000001.jpg").read_bytes())
    (root / "coco" / "link.jpg").symlink_to(outside / "secret.jpg")
    (root / "dir").symlink_to(outside)
    (root / "coco" / "inside.jpg").symlink_to(root / "coco" / "link.jpg")
    locator = ImageLocator(root)
    for relative in ("coco/link.jpg", "dir/secret.jpg", "coco/inside.jpg"):
        with pytest.raises(UnreadableImage, match="outside the image root"):
            locator.path(relative)
    linked_root = tmp_path / "linked_root"        # the root itself may be a link
    linked_root.symlink_to(root)
    (root / "coco" / "real.jpg").write_bytes(b"x")
    assert ImageLocator(linked_root).path("coco/real.jpg").name == "real.jpg"


def test_images_that_would_eat_the_machine_are_refused_before_decoding(tmp_path):
    """A 10 GB sparse file named .jpg is refused by its size; a 1x100000 image is used at a
    bounded size (its square would be 30 GB) in dedup and preview."""
    from PIL import Image
    root = tmp_path / "img"
    root.mkdir()
    with open(root / "huge.jpg", "wb") as f:
        f.truncate(10 * 1024 ** 3)
    Image.new("RGB", (1, 100000), (10, 20, 30)).save(root / "thin.png")
    records = [{"id": name, "image": f"{name}", "conversations": TURNS} for name in ("huge.jpg", "thin.png")]
    source = records_file(tmp_path, json.dumps(records))
    started = time.monotonic()
    result = run_curate("dedup", source, "-o", tmp_path / "o.json", "--image-root", root, "--embedder",
                        "timm-pool", "--no-cache", "-q", "--on-error", "skip", check=0)
    assert result.returncode == 0, result.stderr
    assert len(load_json(tmp_path / "o.json")) == 2
    report = load_json(tmp_path / "o.json.report" / "report.json")
    reasons = {u["image"]: u["reason"] for u in report["unreadable"]}
    assert "byte limit" in reasons["huge.jpg"] and "thin.png" not in reasons
    page = tmp_path / "p.html"
    run_curate("preview", source, "--image-root", root, "-o", page)
    assert "byte limit" in page.read_text()
    assert time.monotonic() - started < 60


def test_a_symbolic_link_loop_named_as_an_image_rejects_its_record(tmp_path):
    """Box conversion with --on-error skip once stopped at the first image that was a link loop."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "real.jpg").write_bytes((IMAGES / "coco/train2017/000000000001.jpg").read_bytes())
    (root / "self.jpg").symlink_to("self.jpg")
    (root / "ping.jpg").symlink_to("pong.jpg")
    (root / "pong.jpg").symlink_to("ping.jpg")
    turns = [{"from": "human", "value": "<image>\nWhere is it?"},
             {"from": "gpt", "value": "Here [0.1, 0.2, 0.3, 0.4]."}]
    records = [{"id": name, "image": f"{name}.jpg", "conversations": turns} for name in ("self", "real", "ping")]
    source = records_file(tmp_path, json.dumps(records))
    out = tmp_path / "o.jsonl"
    result = run_curate("convert", "llava", "internvl", source, "-o", out, "--image-root", root, "--on-error", "skip")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["real"]
    rejects = load_json(tmp_path / "o.jsonl.rejects.jsonl")
    assert [r["id"] for r in rejects] == ["self", "ping"]
    assert all("symbolic links" in r["reason"] and "boxes" in r["reason"] for r in rejects)
    result = run_curate("convert", "llava", "internvl", source, "-o", tmp_path / "strict.jsonl", "--image-root", root)
    assert_one_line_error(result, "'self'", "symbolic links")


@pytest.mark.parametrize("relative, fragment", [("a\x00b.jpg", "NUL"), ("x/" * 2600 + "y.jpg", "characters long")])
def test_image_paths_that_break_system_calls_are_unreadable_not_fatal(relative, fragment):
    from curate.images import ImageLocator, UnreadableImage
    with pytest.raises(UnreadableImage, match=fragment):
        ImageLocator(IMAGES).path(relative)


@pytest.mark.parametrize("reader, record", [
    ("llama-factory", {"messages": [{"role": "user", "content": "<image>hi"}, {"role": "assistant", "content": "x"}],
                       "images": ["/etc/passwd"]}),
    ("llama-factory", {"messages": [{"role": "user", "content": "<image>hi"}, {"role": "assistant", "content": "x"}],
                       "images": ["../../x.jpg"]}),
    ("textocr-gpt4v", {"filename": "/etc/passwd", "caption": "a", "caption_condensed": "a"}),
])
def test_every_reader_refuses_paths_that_leave_the_root(tmp_path, reader, record):
    source = records_file(tmp_path, json.dumps([record]))
    result = run_curate("convert", reader, "llava", source, "-o", tmp_path / "o.json")
    assert_one_line_error(result, "in.json", "record 0")
    assert "absolute" in result.stderr or "climbs out" in result.stderr


# --- crashes on odd but valid input ----------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("text, rejected", [("[]", 0), ('[{"id": 1}]', 1)])
def test_dedup_of_nothing_to_keep_is_a_clean_success(tmp_path, text, rejected):
    source = records_file(tmp_path, text)
    out = tmp_path / "o.json"
    result = run_curate("dedup", source, "--from", "llava", "-o", out, "--image-root", IMAGES, "--embedder",
                        "timm-pool", "--no-cache", "--on-error", "skip", check=0)
    assert summary_numbers(result.stderr) == {"input records": rejected, "written": 0, "removed": 0,
                                              "rejected": rejected}
    assert load_json(out) == []


def test_ids_with_markup_and_terminal_escapes_are_shown_not_obeyed(tmp_path):
    records = [{"id": "[/]", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x"}]},
               {"id": "[/]", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x"}]},
               {"id": "\x1b[31mred", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x"}]},
               {"id": "\x1b[31mred", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x"}]}]
    source = records_file(tmp_path, json.dumps(records), "\x1b[2Jname.json")
    result = run_curate("convert", "llava", "llava", source, "-o", tmp_path / "o.json", check=0)
    assert "\x1b" not in result.stderr
    assert "'[/]'" in result.stderr and "\\x1b[2Jname.json" in result.stderr
    result = run_curate("inspect", source, check=0)
    assert "\x1b" not in result.stdout + result.stderr


# --- options out of range --------------------------------------------------------------------------

COMMANDS = {
    "dedup": ("dedup", FIXTURES / "dedup_demo.json", "--image-root", IMAGES, "-q", "-o"),
    "convert": ("convert", "llava", "llava", FIXTURES / "llava_small.json", "-q", "-o"),
    "preview": ("preview", FIXTURES / "dedup_demo.json", "--image-root", IMAGES, "-o"),
}


@pytest.mark.parametrize("command, option", [
    ("dedup", "--hnsw-m"), ("dedup", "--hnsw-ef-construction"), ("dedup", "--hnsw-ef"), ("dedup", "--batch-size"),
    ("dedup", "--workers"), ("dedup", "--sample-every"), ("dedup", "--seed"), ("convert", "--seed"),
    ("preview", "--limit"),
])
@pytest.mark.parametrize("value", [2**64, 10**30])
def test_every_integer_option_is_bounded_when_parsed(tmp_path, command, option, value):
    """`--hnsw-m 2**64` was an internal error from hnswlib; a huge batch or thread count ran."""
    out = tmp_path / "out"
    result = run_curate(*COMMANDS[command], out, option, value)
    assert result.returncode == 2, result.stderr
    assert f"Invalid value for '{option}'" in result.stderr and "is not in the range" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


# --- plugins that misbehave are named ----------------------------------------------------------------

def _plugin(**hooks):
    module = types.ModuleType("rogue_plugin")
    for name, function in hooks.items():
        setattr(module, name, curate.hookimpl(function))
    return module


class _RogueReader(curate.Reader):
    def __init__(self, name, behaviour):
        self.name, self.behaviour = name, behaviour

    def sniff(self, path, head):
        return "very sure"          # not a number: must not break `auto`

    def read(self, path, options):
        yield curate.Sample("a", None, [curate.Turn("human", "hi"), curate.Turn("gpt", "x")])
        if self.behaviour == "raise":
            raise ZeroDivisionError("oops")
        yield {"id": "not a sample"}


@pytest.mark.parametrize("behaviour, fragment", [("raise", "failed: ZeroDivisionError: oops"),
                                                 ("dict", "yielded a dict")])
def test_reader_that_misbehaves_is_named(registry_with, tmp_path, behaviour, fragment):
    def register_readers(register):
        register(_RogueReader("rogue", behaviour))
    registry_with(_plugin(register_readers=register_readers))
    out = tmp_path / "o.json"
    result = run_curate("convert", "rogue", "llava", FIXTURES / "llava_small.json", "-o", out)
    assert_one_line_error(result, "reader 'rogue' from package '(registered in code)'", fragment)
    assert not out.exists()
    # a sniff() that answers nonsense does not break `auto` for everyone else
    run_curate("convert", "auto", "llava", FIXTURES / "llava_small.json", "-o", out, "-q", check=0)


def test_writer_that_raises_is_named(registry_with, tmp_path):
    class Rogue(curate.Writer):
        name = "rogue-writer"

        def write(self, samples, stream, options):
            next(iter(samples))
            raise KeyError("boom")

    def register_writers(register):
        register(Rogue)
    registry_with(_plugin(register_writers=register_writers))
    result = run_curate("convert", "llava", "rogue-writer", FIXTURES / "llava_small.json", "-o", tmp_path / "o.x")
    assert_one_line_error(result, "writer 'rogue-writer'", "KeyError")
    # a bad record upstream is still reported as itself, not blamed on the writer
    bad = records_file(tmp_path, json.dumps([{"id": 1, "conversations": []}]))
    result = run_curate("convert", "llava", "rogue-writer", bad, "-o", tmp_path / "o.x")
    assert_one_line_error(result, "in.json", "record 0", "conversation is empty")


class _BadModel(curate.LoadedEmbedder):
    embedder, model_name, weights_digest, dim = "bad", "bad", "bad", 4

    def __init__(self, mode):
        self.mode = mode

    def preprocess(self, image):
        return np.zeros(3, np.uint8)

    def embed(self, batch):
        if self.mode == "width":
            return np.ones((len(batch), 3), np.float32)
        out = np.eye(4, dtype=np.float32)[np.arange(len(batch)) % 4]
        out[0] = np.nan
        return out


def test_embedder_output_is_checked(tmp_path):
    from curate.embedding import embed_files
    paths = sorted(IMAGES.rglob("*.jpg"))[:3]
    with pytest.raises(curate.CurateError, match=r"embedder 'bad' .* shape \(3, 3\)"):
        embed_files(paths, _BadModel("width"), batch_size=4, workers=1)
    result = embed_files(paths, _BadModel("nan"), batch_size=4, workers=1)
    assert not result.ok[0] and "not finite" in result.failures[0] and result.ok[1:].all()


# --- the cache is verified --------------------------------------------------------------------------

@pytest.mark.slow
def test_cache_rows_that_fail_verification_are_embedded_again(tmp_path):
    common = ["--image-root", IMAGES, "--embedder", "timm-pool", "--cache", tmp_path / "cache", "-q"]
    run_curate("embed", FIXTURES / "dedup_demo.json", *common, check=0)
    folder = next((tmp_path / "cache").iterdir())
    vectors = folder / "vectors.f32"
    data = np.fromfile(vectors, np.float32).reshape(13, -1)
    data[2] = np.nan
    data[5] = data[6]                      # a plausible unit vector, but not this image's
    data.tofile(vectors)
    out = tmp_path / "o.json"
    result = run_curate("dedup", FIXTURES / "dedup_demo.json", "-o", out, *common[:-1], "-t", "0.85", check=0)
    assert "2 cached vectors failed verification" in result.stderr
    report = json.loads((tmp_path / "o.json.report" / "report.json").read_text())
    assert report["embedding"]["cached"] == 11 and report["embedding"]["embedded"] == 2
    assert report["accounting"]["removed"] == 3
    (folder / "meta.json").write_text("{not json")
    result = run_curate("dedup", FIXTURES / "dedup_demo.json", "-o", out, "--overwrite", *common[:-1], check=0)
    assert "meta.json is unreadable" in result.stderr
    assert json.loads((tmp_path / "o.json.report" / "report.json").read_text())["embedding"]["embedded"] == 13


# --- signals -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def big_input(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "big.json"
    record = {"id": "x", "conversations": [{"from": "human", "value": "q " * 100}, {"from": "gpt", "value": "a " * 400}]}
    path.write_text("[" + ",".join(json.dumps(dict(record, id=f"r{i}")) for i in range(40000)) + "]")
    return path


def wait_for_file(process, pattern, folder: Path, size: int) -> bool:
    """Wait until a file under ``folder`` matching ``pattern`` holds ``size`` bytes; False when
    ``process`` ended first. Watches the files, so a test knows which step a run is in."""
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if any(found.stat().st_size >= size for found in folder.glob(pattern)):
            return True
        time.sleep(0.002)                              # polling the files, not waiting for a moment
    return False


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_signal_at_a_random_point_of_the_writing_leaves_no_temporary_and_a_clean_exit(tmp_path, big_input, signum,
                                                                                     code):
    """The signal is sent once the output is written up to a random point (watched on disk), so it
    lands while the run is under way: the exit code is the signal's, one line, nothing left."""
    out = tmp_path / "out.json"
    process = subprocess.Popen([*CURATE, "convert", "llava", "llava", str(big_input), "-o", str(out), "-q"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    point = int(big_input.stat().st_size * random.Random(signum).uniform(0.05, 0.5))
    written = wait_for_file(process, ".out.json.*.tmp", tmp_path, point)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert written, f"the convert ended before writing {point:,} bytes"
    assert process.returncode == code, stderr
    assert stderr == "error: interrupted; no output was written\n"
    assert not out.exists() and not list(tmp_path.glob(".out.json.*"))


def before_python_started(process, stderr: str) -> bool:
    """A signal that arrives while the interpreter itself starts (before it has handlers, or
    while it imports ``site`` or locates ``-m curate``) ends the process Python's way; no line
    of curate has run, which the traceback (if any) shows: none of its frames is curate's.
    A frame is a ``File "<path>"`` line: the import system may name curate's folder in a message
    (``KeyError: '.../core'`` from its path cache) before any of curate's code runs."""
    curate_frame = f'File "{os.path.dirname(curate.__file__)}{os.sep}'
    if process.returncode < 0 and not stderr.strip():
        return True
    python_error = "Traceback" in stderr or "Fatal Python error" in stderr
    return process.returncode != 0 and python_error and curate_frame not in stderr


def test_start_up_classifier_tells_python_frames_from_curate_frames():
    """The import system's own message may name curate's folder; only a frame in it counts."""
    package = os.path.dirname(curate.__file__)
    ended = subprocess.CompletedProcess([], 1)
    python_only = (f"Traceback (most recent call last):\n  File \"<frozen importlib._bootstrap_external>\", "
                   f"line 1437, in _path_importer_cache\nKeyError: '{package}'\n\nKeyboardInterrupt\n")
    in_curate = (f"Traceback (most recent call last):\n  File \"{package}{os.sep}cli.py\", line 3, in <module>\n"
                 f"KeyboardInterrupt\n")
    assert before_python_started(ended, python_only)
    assert not before_python_started(ended, in_curate)


@pytest.mark.slow
def test_ctrl_c_during_start_up_is_a_clean_exit(tmp_path):
    """Signals sent while Python imports curate's modules: never a traceback, always 130 (or done)."""
    source = FIXTURES / "llava_small.json"
    for n, delay in enumerate(np.linspace(0.02, 0.5, 12)):
        out = tmp_path / f"o{n}.json"
        process = subprocess.Popen([*CURATE, "convert", "llava", "llava", str(source), "-o", str(out), "-q"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        if before_python_started(process, stderr):
            continue
        assert "Traceback" not in stderr, (delay, stderr)
        # -2 after curate's own clean line: seen rarely on a loaded machine when the signal lands
        # during the first imports; the message and the absence of any output still hold.
        assert process.returncode in (0, 130) or (process.returncode == -2 and "interrupted" in stderr), \
            (delay, process.returncode, stderr)
        assert not list(tmp_path.glob(f".o{n}.json.*"))


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_dedup_is_a_clean_exit(tmp_path, signum, code):
    """Ctrl-C while dedup embeds (its cache is being filled) or writes (its output is): the
    signal's exit code, one line, nothing left, never a crash. Each moment is seen on disk (noise
    images a strict threshold keeps, so that the output is long to write)."""
    from PIL import Image
    rng = np.random.default_rng(0)
    for i in range(120):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(tmp_path / f"{i}.jpg")
    records = [{"id": f"r{i}", "image": f"{i % 120}.jpg", "conversations": TURNS} for i in range(60000)]
    source = records_file(tmp_path, json.dumps(records))
    moments = {"embedding": (tmp_path / "embedding", "*/keys.jsonl", 1),       # a row in its cache
               "writing": (tmp_path, ".out.json.*.tmp", source.stat().st_size // 10)}
    for moment, (folder, pattern, size) in moments.items():
        out = tmp_path / "out.json"
        process = subprocess.Popen([*CURATE, "dedup", str(source), "-o", str(out), "--image-root", str(tmp_path),
                                    "--embedder", "timm-pool", "--cache", str(tmp_path / moment), "--batch-size", "4",
                                    "--workers", "1", "--signals", "embedding", "-t", "0.9999", "-q", "--overwrite"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        reached = wait_for_file(process, pattern, folder, size)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
        assert reached, f"dedup ended before {moment}: {stderr[-2000:]}"
        assert process.returncode == code, (moment, stderr)
        assert stderr == "error: interrupted; no output was written\n", moment
        assert not out.exists() and not list(tmp_path.glob(".out.json*")), moment
        report = tmp_path / "out.json.report"
        assert not report.exists() or not list(report.glob(".*.tmp")), moment


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2:].split()[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_to_the_process_group_with_decode_processes_is_one_clean_line(tmp_path, signum, code):
    """A terminal's Ctrl-C reaches every process of the group, forked decode workers too: only
    curate's own line is printed (the workers once printed a traceback each)."""
    from PIL import Image
    rng = np.random.default_rng(0)
    records = []
    for i in range(400):
        Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(tmp_path / f"{i}.jpg")
        records.append({"id": str(i), "image": f"{i}.jpg", "conversations": TURNS})
    source = records_file(tmp_path, json.dumps(records))
    out = tmp_path / "out.json"
    process = subprocess.Popen([*CURATE, "dedup", str(source), "-o", str(out), "--image-root", str(tmp_path),
                                "--embedder", "timm-pool", "--cache", str(tmp_path / "cache"), "-q", "--decode",
                                "processes", "--workers", "2", "--batch-size", "4"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    # the first batch is in the cache: the workers are decoding the next ones
    embedding = wait_for_file(process, "*/keys.jsonl", tmp_path / "cache", 1)
    workers = len(_children(process.pid))
    os.killpg(process.pid, signum)
    _, stderr = process.communicate(timeout=120)
    assert embedding and workers >= 2, (embedding, workers, stderr[-2000:])
    assert process.returncode == code, stderr[-2000:]
    assert stderr == "error: interrupted; no output was written\n"
    assert not out.exists() and not list(tmp_path.glob(".out.json*"))


RACE = """
import os, random, signal, sys, threading
from pathlib import Path
from curate import atomic
from curate.interrupts import Terminated, install_signal_handlers

install_signal_handlers()
folder = Path(sys.argv[1])
interrupted = 0
for attempt in range(int(sys.argv[2])):
    timer = threading.Timer(random.uniform(0, 0.004), os.kill, (os.getpid(), signal.SIGTERM))
    try:
        timer.start()
        with atomic.Outputs(overwrite=True) as outputs:
            for name in ("data.json", "report.md", "report.html"):
                outputs.open(folder / name).write("x" * 10000)
        timer.join()
    except Terminated:
        interrupted += 1
        atomic.remove_temporaries()     # what the CLI's exit after a signal does
    timer.join()
    left = sorted(p.name for p in folder.glob(".*.tmp"))
    assert not left, (attempt, left)
print(interrupted)
"""


@pytest.mark.slow
def test_a_signal_at_any_moment_of_writing_leaves_no_temporary_file(tmp_path):
    """SIGTERM from another thread at random moments of open/write/commit, 1,500 times: a
    signal that lands where no ``with`` block unwinds (entering ``__exit__``) once left a
    temporary report behind (about 1 run in 600 before the fix); now every one is removed."""
    script = tmp_path / "race.py"
    script.write_text(RACE)
    folder = tmp_path / "out"
    folder.mkdir()
    result = subprocess.run([os.sys.executable, str(script), str(folder), "1500"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout) > 1000        # the signal did land inside the writing, most times


def test_a_signal_inside_a_held_step_is_raised_when_the_step_ends(tmp_path):
    script = ("import os, signal\n"
              "from curate.interrupts import Terminated, install_signal_handlers, signals_held\n"
              "install_signal_handlers()\n"
              "try:\n"
              "    with signals_held():\n"
              "        os.kill(os.getpid(), signal.SIGTERM)\n"
              "        print('finished the step')\n"
              "except Terminated as e:\n"
              "    print('then raised', e.signal)\n")
    result = subprocess.run([os.sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.stdout.split("\n")[:2] == ["finished the step", f"then raised {int(signal.SIGTERM)}"], result


def test_the_exit_after_a_signal_removes_temporaries_no_block_unwound(tmp_path):
    script = ("import sys\n"
              "from curate.atomic import Outputs\n"
              "from curate.entry import exit_interrupted\n"
              "from curate.interrupts import Terminated\n"
              "Outputs().open(sys.argv[1]).write('half')\n"
              "exit_interrupted(Terminated(15))\n")
    result = subprocess.run([os.sys.executable, "-c", script, str(tmp_path / "o.json")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 143
    assert result.stderr == "error: interrupted; no output was written\n"
    assert list(tmp_path.iterdir()) == []


def test_temporaries_of_killed_runs_are_removed_by_the_next_run(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = tmp_path / f".o.json.{dead.pid}.abc123.tmp"
    orphan.write_text("half a file")
    mine = tmp_path / f".o.json.{os.getpid()}.keep.tmp"       # a live process's temporary stays
    mine.write_text("in progress")
    run_curate("convert", "llava", "llava", FIXTURES / "llava_small.json", "-o", tmp_path / "o.json", "-q", check=0)
    assert not orphan.exists() and mine.exists()


# Stops a process right after the rename that ``sys.argv[1]`` names (the first of a commit's
# journal copies, or of its outputs) and says so on stdout, for the test to SIGKILL it there.
STOP_AT_RENAME = """
import os, sys
from pathlib import Path
from curate import atomic
stop, real_replace = sys.argv.pop(1), os.replace

def replace(source, target):
    real_replace(source, target)
    journal = Path(target).name.startswith(atomic.JOURNAL)
    if Path(source) in atomic.TEMPORARIES and journal == (stop == "journal"):
        print("stopped", flush=True)
        sys.stdin.read()                       # until the test's SIGKILL

os.replace = replace
"""

TWO_FOLDERS = STOP_AT_RENAME + """
with atomic.Outputs() as outputs:
    for path in sys.argv[1:]:
        outputs.open(path).write("new")
"""


def kill_at_rename(script: str, stop: str, *args) -> None:
    """Run ``script`` and SIGKILL it once it stops after the rename ``stop`` names."""
    process = subprocess.Popen([os.sys.executable, "-c", script, stop, *map(str, args)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line == "stopped\n":
            break
    process.kill()
    _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL, stderr


@pytest.mark.parametrize("stop, finished", [("output", "new"), ("journal", "old")])
def test_a_commit_killed_between_two_renames_is_finished_or_dropped_by_the_next_run(tmp_path, stop, finished):
    """A SIGKILL between renaming the dataset and removed.jsonl once left the new dataset beside
    the old removed list. Killed after its first output's rename, the commit is finished by the
    next run that writes into either folder; killed before (its journal half written), dropped."""
    from curate.atomic import Outputs, remove_orphans
    paths = [tmp_path / "data" / "out.json", tmp_path / "report" / "removed.jsonl"]
    for path in paths:
        path.parent.mkdir()
        path.write_text("old")
    kill_at_rename(TWO_FOLDERS, stop, *paths)
    left = [p.name for path in paths for p in path.parent.iterdir()]
    assert [path.read_text() for path in paths] == (["new", "old"] if stop == "output" else ["old", "old"])
    assert sum(name.startswith(".curate-commit.") for name in left) == (2 if stop == "output" else 1)
    Outputs(overwrite=True).claim(paths[1])          # the next run, into the report folder only
    assert [path.read_text() for path in paths] == [finished, finished]
    for path in paths:
        remove_orphans(path)                          # and the killed run's temporaries go, as before
        assert [p.name for p in path.parent.iterdir()] == [path.name]


@pytest.mark.slow
def test_dedup_killed_while_renaming_its_outputs_leaves_one_run_s_files(tmp_path):
    """The new dataset beside the old removed.jsonl: finished by the next run, even one that
    then refuses to overwrite."""
    out, report = tmp_path / "out.json", tmp_path / "out.json.report"
    command = ["dedup", FIXTURES / "dedup_demo.json", "-o", out, "--image-root", IMAGES, "--embedder", "timm-pool",
               "--no-cache", "--verify", "none", "-q"]
    run_curate(*command, "-t", "0.99", check=0)
    kill_at_rename(STOP_AT_RENAME + "from curate.entry import main\nsys.argv[0] = 'curate'\nmain()\n", "output",
                   *command, "-t", "0.7", "--overwrite")
    assert any(p.name.startswith(".curate-commit.") for p in report.iterdir())       # killed mid-commit
    result = run_curate(*command, "-t", "0.7")
    assert_one_line_error(result, "exists")
    data = json.loads((report / "report.json").read_text())
    assert data["thresholds"][0]["threshold"] == 0.7
    assert data["accounting"]["written"] == len(load_json(out))
    assert data["accounting"]["removed"] == len(load_json(report / "removed.jsonl")) > 0
    assert not [p for p in [*tmp_path.iterdir(), *report.iterdir()] if p.name.startswith(".")]


# --- fuzz: byte mutations of real records ----------------------------------------------------------

def _mutants(data: bytes, count: int, seed: int):
    rng = random.Random(seed)
    for _ in range(count):
        mutant = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(mutant))
            action = rng.random()
            if action < 0.4:
                mutant[at] = rng.randrange(256)
            elif action < 0.7:
                del mutant[at:at + rng.randint(1, 20)]
            else:
                mutant[at:at] = rng.choice([b"\\ud800", b"1e999", b"[[[[", b"\x00", b'"', b"{}", b"\xff", b"]"])
        yield bytes(mutant)


def test_byte_mutants_of_real_records_never_give_an_internal_error(tmp_path):
    """Clean error or clean success, never an internal error (bounded: 150 mutants)."""
    base = REAL / "llava_v1_5_mix665k.every500.json"
    records = load_json(base)[:40] if base.exists() else load_json(FIXTURES / "llava_small.json")
    data = json.dumps(records, ensure_ascii=False, indent=1).encode()
    for n, mutant in enumerate(_mutants(data, 150, seed=13)):
        source = tmp_path / f"m{n}.json"
        source.write_bytes(mutant)
        for mode in ("fail", "skip"):
            out = tmp_path / f"o{n}{mode}.json"
            result = run_curate("convert", "auto", "llava", source, "-o", out, "-q", "--on-error", mode)
            assert "internal error" not in result.stderr, (n, result.stderr)
            assert result.returncode in (0, 1), (n, result.stderr)
            if result.returncode == 1:
                assert not out.exists()
        source.unlink()
