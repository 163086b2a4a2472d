"""`curate dedup` and `curate embed` end to end, with a real ImageNet model (offline)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import CURATE, FIXTURES, IMAGES, assert_one_line_error, load_json, run_curate, summary_numbers

pytestmark = pytest.mark.slow   # a model, Ray or killed processes

DEMO = FIXTURES / "dedup_demo.json"
ROOT_IMAGES = FIXTURES / "images"
# gqa 2 and 3 are the two photos of a stereo pair: they look alike (embedding 0.88) but the
# verifier sees parallax, other content, so 3 stays and is listed as "looked alike, kept".
EXPECTED_REMOVED = {"000000000002": "000000000001", "000000000004": "000000000003", 5: 4}


def dedup(tmp_path, *extra, check=0, name="out.json"):
    out = tmp_path / name
    result = run_curate("dedup", DEMO, "-o", out, "--image-root", ROOT_IMAGES, "--embedder", "timm-pool",
                        "--cache", tmp_path / "cache", "--workers", "2", *extra, check=check)
    return out, result


def report_of(out):
    return json.loads((Path(str(out) + ".report") / "report.json").read_text())


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    out, result = dedup(tmp, "-t", "0.85", "-t", "0.7", "--index", "exact")
    return tmp, out, result


def test_near_duplicates_are_removed_and_everything_is_accounted_for(demo_run):
    tmp, out, result = demo_run
    kept = load_json(out)
    removed = [json.loads(line) for line in (Path(str(out) + ".report") / "removed.jsonl").read_text().splitlines()]
    assert {r["id"]: r["duplicate_of_id"] for r in removed} == EXPECTED_REMOVED
    assert all(r["score"] >= 0.85 and r["threshold"] == 0.85 for r in removed)
    source = load_json(DEMO)
    # kept samples in input order; the missing image's sample and the text-only one stay
    assert [r["id"] for r in kept] == [r["id"] for r in source if r["id"] not in EXPECTED_REMOVED]
    assert len(source) == len(kept) + len(removed)
    assert summary_numbers(result.stderr) == {"input records": 16, "written": 13, "removed": 3, "rejected": 0}
    data = report_of(out)
    assert data["accounting"] == {"input": 16, "written": 13, "removed": 3, "rejected": 0}
    looked = data["thresholds"][0]["looked_alike_kept"]
    assert [(p["image"], p["looked_like"]) for p in looked] == [("gqa/images/3.jpg", "gqa/images/2.jpg")]
    assert data["embedding"]["unique_images"] == 14 and data["embedding"]["unreadable"] == 1
    assert data["unreadable"][0]["image"] == "coco/train2017/000000000099.jpg"
    assert data["unreadable"][0]["reason"] == "missing file"


def test_report_tables_per_threshold_like_the_study(demo_run):
    _, out, _ = demo_run
    data = report_of(out)
    assert [block["threshold"] for block in data["thresholds"]] == [0.85, 0.7]
    rows = {row["source"]: row for row in data["thresholds"][0]["table"]}
    assert (rows["coco"]["samples"], rows["coco"]["unique_images"], rows["coco"]["similar"], rows["coco"]["kept"]) \
        == (7, 6, 2, 4)
    assert (rows["gqa"]["similar"], rows["gqa"]["kept"]) == (1, 4)
    assert rows["total"]["samples"] == 16
    assert data["thresholds"][0]["pairs"][0]["duplicate_of"] == "coco/train2017/000000000001.jpg"
    hist = data["nearest_neighbour_histogram"]["gqa"]
    assert sum(hist["counts"]) == 5
    md = (Path(str(out) + ".report") / "report.md").read_text()
    assert "| source | samples | unique images | similar | kept |" in md
    html = (Path(str(out) + ".report") / "report.html").read_text()
    assert html.count("<img ") >= 8 and "<svg" in html


def test_rerun_embeds_nothing_and_global_scope_finds_cross_source_copies(demo_run, tmp_path):
    tmp, _, _ = demo_run
    shutil.copytree(tmp / "cache", tmp_path / "cache")
    out, _ = dedup(tmp_path, "-t", "0.85", "--scope", "global", "--index", "hnsw", "-q")
    data = report_of(out)
    assert data["embedding"]["embedded"] == 0 and data["embedding"]["cached"] == 13
    removed = {json.loads(line)["id"] for line in (Path(str(out) + ".report") / "removed.jsonl").open()}
    assert removed == set(EXPECTED_REMOVED) | {1}     # the half-size cat in gqa duplicates coco's cat


def test_hnsw_and_exact_agree_on_the_fixtures(demo_run, tmp_path):
    tmp, exact_out, _ = demo_run
    shutil.copytree(tmp / "cache", tmp_path / "cache")
    out, _ = dedup(tmp_path, "-t", "0.85", "-t", "0.7", "--index", "hnsw", "-q")
    assert load_json(out) == load_json(exact_out)
    assert [b["table"] for b in report_of(out)["thresholds"]] == [b["table"] for b in report_of(exact_out)["thresholds"]]


def test_drop_unreadable_rejects_with_reason(demo_run, tmp_path):
    tmp, _, _ = demo_run
    shutil.copytree(tmp / "cache", tmp_path / "cache")
    out, _ = dedup(tmp_path, "-t", "0.85", "--drop-unreadable", "-q")
    data = report_of(out)
    assert data["accounting"] == {"input": 16, "written": 12, "removed": 3, "rejected": 1}
    reject = load_json(str(out) + ".rejects.jsonl")[0]
    assert reject["id"] == "000000000099" and "missing file" in reject["reason"]


def test_output_exists_and_bad_threshold_are_one_line_errors(tmp_path):
    out = tmp_path / "out.json"
    out.write_text("[]")
    _, result = dedup(tmp_path, check=None)
    assert_one_line_error(result, "--overwrite")
    _, result = dedup(tmp_path, "-t", "1.5", "--overwrite", check=None)
    assert_one_line_error(result, "1.5")
    assert out.read_text() == "[]"


def test_vit_cls_without_weights_offline_says_how_to_get_them(tmp_path):
    result = run_curate("dedup", DEMO, "-o", tmp_path / "o.json", "--image-root", ROOT_IMAGES,
                        "--model", "vit_tiny_patch16_224", env={"HF_HUB_OFFLINE": "1"})
    assert_one_line_error(result, "no weights for vit_tiny_patch16_224", "--weights", "timm-pool")
    assert not (tmp_path / "o.json").exists()


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    """A tiny random ViT saved both ways, so that weight loading is exercised with no download."""
    import timm
    import torch
    from safetensors.torch import save_file
    folder = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    torch.save({"state_dict": model.state_dict()}, folder / "tiny.pth")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "tiny.safetensors"))
    return model, folder


@pytest.mark.parametrize("filename", ["tiny.pth", "tiny.safetensors"])
def test_vit_cls_takes_the_class_token_of_the_saved_model(tiny_vit, tmp_path, filename):
    import torch
    from curate.registry import get_registry
    model, folder = tiny_vit
    loaded = get_registry().get("embedder", "vit-cls").load("vit_tiny_patch16_224", str(folder / filename), "cpu")
    assert loaded.dim == 192 and loaded.weights_digest.startswith("sha256:")
    import timm
    image = Image.open(ROOT_IMAGES / "gqa/images/4.jpg").convert("RGB")
    # dedup sees the whole image (no centre crop): squashed to the model's input, normalised as timm does
    config = timm.data.resolve_data_config({}, model=model)
    whole = torch.from_numpy(np.asarray(image.resize((224, 224), Image.Resampling.BICUBIC), np.float32) / 255)
    timm_batch = ((whole - torch.tensor(config["mean"])) / torch.tensor(config["std"])).permute(2, 0, 1)[None]
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(model.eval().forward_features(timm_batch)[:, 0], dim=-1).numpy()
    assert np.allclose(loaded.embed(loaded.preprocess(image)[None]), expected, atol=1e-4)


def test_vit_cls_end_to_end_from_the_cli(tiny_vit, tmp_path):
    _, folder = tiny_vit
    out = tmp_path / "o.json"
    run_curate("dedup", DEMO, "-o", out, "--image-root", ROOT_IMAGES, "--embedder", "vit-cls", "--model",
               "vit_tiny_patch16_224", "--weights", folder / "tiny.pth", "--no-cache", "-q", check=0)
    data = report_of(out)
    assert data["settings"]["embedder"] == "vit-cls" and data["settings"]["dim"] == 192
    assert data["accounting"]["input"] == 16 and data["embedding"]["embedded"] == 13


def test_weights_that_do_not_fit_the_model(tiny_vit, tmp_path):
    _, folder = tiny_vit
    result = run_curate("dedup", DEMO, "-o", tmp_path / "o.json", "--image-root", ROOT_IMAGES, "--model",
                        "vit_small_patch16_224", "--weights", folder / "tiny.pth")
    assert_one_line_error(result, "tiny.pth", "do not fit model vit_small_patch16_224")


def test_embed_writes_npy_and_fills_the_cache(tmp_path):
    out = tmp_path / "vectors.npy"
    run_curate("embed", DEMO, "--image-root", ROOT_IMAGES, "--embedder", "timm-pool", "--cache", tmp_path / "cache",
               "-o", out, "-q", check=0)
    vectors = np.load(out)
    listing = json.loads(Path(str(out) + ".json").read_text())
    assert vectors.shape == (14, 1280) and len(listing) == 14
    assert [x["ok"] for x in listing].count(False) == 1
    assert np.allclose(np.linalg.norm(vectors[[x["ok"] for x in listing]], axis=1), 1, atol=1e-4)
    out2, _ = dedup(tmp_path, "-q")
    assert report_of(out2)["embedding"]["cached"] == 13


def test_killed_embedding_resumes_where_it_stopped(tmp_path):
    """SIGKILL during embedding; the re-run embeds only what the first run had not stored."""
    root = tmp_path / "root"
    originals = sorted(ROOT_IMAGES.rglob("*.jpg"))
    records = []
    for k in range(6):
        for i, path in enumerate(originals):
            target = root / "coco" / f"{k}_{i}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.open(path).rotate(k * 3).save(target)
            records.append({"id": f"{k}_{i}", "image": f"coco/{k}_{i}.jpg",
                            "conversations": [{"from": "human", "value": "<image>\nHi"}, {"from": "gpt", "value": "Hi"}]})
    data = tmp_path / "data.json"
    data.write_text(json.dumps(records))
    cache = tmp_path / "cache"
    command = [*CURATE, "embed", str(data), "--image-root", str(root), "--embedder", "timm-pool", "--cache",
               str(cache), "--batch-size", "2", "-q"]
    process = subprocess.Popen(command)
    deadline = time.monotonic() + 120
    keys = None
    while time.monotonic() < deadline and process.poll() is None:
        found = list(cache.glob("*/keys.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 6:
            keys = found[0]
            break
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert keys is not None, "the first run ended before it could be killed"
    stored = len(keys.read_text().splitlines())
    assert stored < len(records)
    out = tmp_path / "out.json"
    run_curate("dedup", data, "-o", out, "--image-root", root, "--embedder", "timm-pool", "--cache", cache,
               "-q", check=0)
    embedding = report_of(out)["embedding"]
    assert embedding["cached"] >= stored - 2           # at most the batch being written is lost
    assert embedding["cached"] + embedding["embedded"] == len(records)
    assert embedding["embedded"] <= len(records) - stored + 2


def test_report_renders_in_headless_chromium_and_escapes_data(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium is not installed (apt-get install chromium); .ci/run installs it")
    records = load_json(DEMO)
    records[1]["id"] = '<script>document.title="pwned"</script>'
    source = tmp_path / "hostile.json"
    source.write_text(json.dumps(records))
    out = tmp_path / "o.json"
    run_curate("dedup", source, "-o", out, "--image-root", ROOT_IMAGES, "--embedder", "timm-pool", "--cache",
               tmp_path / "cache", "-t", "0.85", "-q", check=0)
    html = Path(str(out) + ".report") / "report.html"
    assert "<script>" not in html.read_text()
    result = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                             "--no-first-run", "--disable-background-networking", "--disable-component-update",
                             "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                             html.as_uri()], capture_output=True, text=True, timeout=120)
    dom = result.stdout
    assert "<title>curate dedup report</title>" in dom and "pwned" not in dom.split("</title>")[0]
    assert dom.count("<img ") >= 8 and dom.count("<section") == 3
    assert "&lt;script&gt;" in dom


# --- real photographs (../shared/data/images) --------------------------------------------------------

def _variants(root: Path):
    """Originals plus re-encoded, resized and cropped copies, in their own sources."""
    records, expected = [], {}
    photos = sorted(IMAGES.glob("*.jpg"))
    for i, photo in enumerate(photos):
        rel = f"coco/train2017/{i:012d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, root / rel)
        records.append(rel)
        image = Image.open(photo).convert("RGB")
        if i % 3 == 0:
            variant = image.resize((image.width // 2, image.height // 2))
        elif i % 3 == 1:
            w, h = image.size
            variant = image.crop((w // 20, h // 20, w - w // 20, h - h // 20))
        else:
            variant = image
        copy = f"coco/train2017/{i:012d}_copy.jpg"
        variant.save(root / copy, quality=35 if i % 3 == 2 else 90)
        records.append(copy)
        expected[copy] = rel
    return records, expected, photos


@pytest.mark.skipif(not IMAGES.is_dir(), reason="../shared/data/images is absent")
def test_real_photographs_near_duplicates(tmp_path):
    root = tmp_path / "root"
    images, expected, photos = _variants(root)
    data = tmp_path / "data.json"
    data.write_text(json.dumps([{"id": f"s{i}", "image": rel, "conversations": [
        {"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "A photo."}]}
        for i, rel in enumerate(images)]))
    results = {}
    for index in ("exact", "hnsw"):
        out = tmp_path / f"{index}.json"
        run_curate("dedup", data, "-o", out, "--image-root", root, "--embedder", "timm-pool", "--cache",
                   tmp_path / "cache", "-t", "0.85", "--index", index, "-q", check=0)
        removed = [json.loads(line) for line in (Path(str(out) + ".report") / "removed.jsonl").open()]
        results[index] = {r["image"]: r["duplicate_of"] for r in removed}
    assert results["exact"] == results["hnsw"]
    names = {f"coco/train2017/{i:012d}.jpg": p.stem for i, p in enumerate(photos)}
    removed = results["exact"]
    for copy, original in expected.items():
        # a copy duplicates its original, or what the original was itself removed for
        assert removed.get(copy) == removed.get(original, original), copy
    # the stereo pair looks alike (the one natural look-alike among the originals), but its two
    # viewpoints differ by parallax: the verifier keeps both
    extra = {names[k]: names[v] for k, v in removed.items() if k not in expected}
    assert extra == {}


def test_process_and_thread_decoding_give_the_same_vectors(tmp_path):
    from curate.embedding import embed_files
    from curate.registry import get_registry
    model = get_registry().get("embedder", "timm-pool").load(None, None, "cpu")
    paths = sorted(ROOT_IMAGES.rglob("*.jpg")) + [tmp_path / "missing.jpg"]
    threads = embed_files(paths, model, batch_size=4, workers=2)
    processes = embed_files(paths, model, batch_size=4, workers=2, processes=True)
    assert np.allclose(threads.vectors, processes.vectors, atol=1e-5)
    assert threads.failures == processes.failures == {len(paths) - 1: "missing file"}


# --- decontamination: --against ------------------------------------------------------------------

def _benchmark(tmp_path):
    """The demo's images plus an evaluation input under bench/: a resized copy of coco 1, a
    re-encoded crop of gqa 1, and vg 1 itself (a path the training data uses too)."""
    root = tmp_path / "root"
    shutil.copytree(ROOT_IMAGES, root)
    (root / "bench").mkdir()
    one = Image.open(root / "coco/train2017/000000000001.jpg").convert("RGB")
    one.resize((one.width * 3 // 4, one.height * 3 // 4)).save(root / "bench/a.jpg", quality=90)
    gqa = Image.open(root / "gqa/images/1.jpg").convert("RGB")
    w, h = gqa.size
    gqa.crop((w // 30, h // 30, w - w // 30, h - h // 30)).save(root / "bench/b.jpg", quality=60)
    evaluation = tmp_path / "mmbench.json"
    evaluation.write_text(json.dumps([
        {"id": f"q{i}", "image": image, "conversations": [{"from": "human", "value": "<image>\nWhat is it?"},
                                                         {"from": "gpt", "value": "A."}]}
        for i, image in enumerate(["bench/a.jpg", "bench/b.jpg", "vg/VG_100K/1.jpg"])]))
    return root, evaluation


def test_against_removes_training_copies_of_evaluation_images_and_writes_no_evaluation_input(tmp_path):
    root, evaluation = _benchmark(tmp_path)
    before = evaluation.read_bytes()
    out = tmp_path / "clean.json"
    result = run_curate("dedup", DEMO, "--against", evaluation, "-o", out, "--image-root", root, "--embedder",
                        "timm-pool", "--cache", tmp_path / "cache", "--workers", "2", "-t", "0.85", check=0)
    assert evaluation.read_bytes() == before
    report = Path(str(out) + ".report")
    removed = {r["id"]: r for r in map(json.loads, (report / "removed.jsonl").read_text().splitlines())}
    against = {i: r["duplicate_of"] for i, r in removed.items() if r.get("against")}
    # every copy of an evaluation image goes, whatever its source: coco 2, the training data's own copy
    # of coco 1, is removed as the benchmark's copy (the evaluation image wins), coco 5 is gqa 1's copy
    assert against == {"000000000001": "bench/a.jpg", "000000000001_2": "bench/a.jpg", "000000000002": "bench/a.jpg",
                       "000000000005": "bench/b.jpg", 1: "bench/b.jpg", "VG_1": "vg/VG_100K/1.jpg"}
    assert all(r["against"] == str(evaluation) for r in removed.values() if r.get("against"))
    # the training data's own duplicates go as before: gqa 5 is gqa 4's copy, coco 4 coco 3's
    assert removed[5]["duplicate_of_id"] == 4 and removed["000000000004"]["duplicate_of_id"] == "000000000003"
    assert len(removed) == len(against) + 2
    kept = load_json(out)
    source = load_json(DEMO)
    assert len(source) == len(kept) + len(removed)
    assert not {r["id"] for r in kept} & set(removed)
    data = report_of(out)
    assert data["thresholds"][0]["against"] == {str(evaluation): {"images": len(set(r["image"] for i, r in removed.items()
                                                                                    if r.get("against"))),
                                                                   "samples": len(against)}}
    assert {p["duplicate_of"] for p in data["thresholds"][0]["against_pairs"]} == set(against.values())
    assert f"against {evaluation}: {len(against)} training samples removed" in " ".join(result.stderr.split())
    assert "Against" in (report / "report.md").read_text()
    # the decisions name the evaluation input, and `curate apply` carries them out as dedup did
    rows = [json.loads(line) for line in (report / "decisions.jsonl").read_text().splitlines()[1:]]
    assert "bench/a.jpg" not in {row["image"] for row in rows}
    assert {row["image"]: row["duplicate_of"] for row in rows if row.get("against")}["coco/train2017/000000000001.jpg"] \
        == "bench/a.jpg"
    applied = tmp_path / "applied.json"
    run_curate("apply", report / "decisions.jsonl", DEMO, "-o", applied, "-q", check=0)
    assert load_json(applied) == kept
    # --decisions-only says the same per evaluation input, in images
    only = run_curate("dedup", DEMO, "--against", evaluation, "-o", tmp_path / "d.jsonl", "--decisions-only",
                      "--image-root", root, "--embedder", "timm-pool", "--cache", tmp_path / "cache", "-t", "0.85",
                      check=0)
    matched = sum(1 for row in rows if row.get("against"))
    assert f"against {evaluation}: {matched} training images to remove" in " ".join(only.stderr.split())


def test_against_never_writes_the_evaluation_input(tmp_path):
    root, evaluation = _benchmark(tmp_path)
    before = evaluation.read_bytes()
    result = run_curate("dedup", DEMO, "--against", evaluation, "-o", evaluation, "--overwrite", "--image-root", root,
                        "--embedder", "timm-pool", "--cache", tmp_path / "cache")
    assert_one_line_error(result, str(evaluation))
    assert evaluation.read_bytes() == before


# --- curate embed --export -------------------------------------------------------------------------

def test_embed_exports_vectors_with_their_ids_as_parquet_or_npy(tmp_path):
    import pyarrow.parquet as pq
    cache = tmp_path / "cache"
    run_curate("embed", DEMO, "--image-root", ROOT_IMAGES, "--embedder", "timm-pool", "--cache", cache,
               "--export", tmp_path / "v.parquet", check=0)
    table = pq.read_table(tmp_path / "v.parquet").to_pylist()
    run_curate("embed", DEMO, "--image-root", ROOT_IMAGES, "--embedder", "timm-pool", "--cache", cache,
               "--export", tmp_path / "v.npy", "-q", check=0)
    vectors = np.load(tmp_path / "v.npy")
    ids = [json.loads(line) for line in (tmp_path / "v.ids.jsonl").read_text().splitlines()]
    # the 13 readable unique images (the missing one is left out), in order of first appearance
    images = list(dict.fromkeys(r["image"] for r in load_json(DEMO) if r.get("image")))
    images.remove("coco/train2017/000000000099.jpg")
    assert [row["image"] for row in table] == [row["image"] for row in ids] == images
    assert [row["row"] for row in ids] == list(range(13)) and ids[0]["sample_id"] == "000000000001"
    assert [row["sample_id"] for row in table] == [row["sample_id"] for row in ids]
    assert vectors.shape == (13, 1280) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert np.array_equal(np.array([row["vector"] for row in table], np.float32), vectors)
    # the same vectors dedup decides with: the gqa 4 / 5 pair above its threshold
    g4, g5 = images.index("gqa/images/4.jpg"), images.index("gqa/images/5.jpg")
    assert vectors[g4] @ vectors[g5] > 0.85
    bad = run_curate("embed", DEMO, "--image-root", ROOT_IMAGES, "--embedder", "timm-pool", "--cache", cache,
                     "--export", tmp_path / "v.csv")
    assert_one_line_error(bad, "--export", "v.csv", ".parquet or .npy")
    assert not (tmp_path / "v.csv").exists()
