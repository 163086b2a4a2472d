"""The dedup report a person chooses a threshold by: charts with counts and readable labels,
the closest pairs that were kept, the kept-against-threshold curve, a page of bounded size,
all checked in a real browser (headless Chromium) where one is installed."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import FIXTURES, load_json, run_curate
from curate.charts import LABEL_GAP, histogram_svg, label_rows, nice_ticks
from curate.registry import get_registry
from curate.progress import SHOWN_CHARS, shown
from curate.similarity import CURVE_THRESHOLDS, kept_counts, kept_curve, keep_or_remove, nearest_neighbours

DEMO = FIXTURES / "dedup_demo.json"
ROOT_IMAGES = FIXTURES / "images"
PAGE_LIMIT = 2_000_000


def unit(a):
    a = np.asarray(a, np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_kept_curve_is_the_walk_at_every_threshold():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 32))
    vectors = unit(np.concatenate([base + rng.normal(scale=s, size=base.shape) for s in (0, 0.3, 0.6, 0.9)]))
    vectors = vectors[rng.permutation(len(vectors))]
    exact = get_registry().get("index", "exact")
    sims, ids = nearest_neighbours(vectors, exact)
    counts = kept_counts(kept_curve(sims, ids))
    walked = [int(keep_or_remove(vectors, exact, float(t)).kept.sum()) for t in CURVE_THRESHOLDS]
    assert counts == walked
    assert counts[-1] == 160 and counts[0] < 60          # the curve spans something, not a constant


def test_a_group_s_neighbourhood_taken_a_part_at_a_time_is_the_whole_one():
    """On Ray the neighbour lists reach the driver a part at a time (each image's kept curve
    then reads the earlier parts' bits): the same neighbourhood as from every list at once."""
    from curate.deduplicate import Neighbourhood
    rng = np.random.default_rng(3)
    base = rng.normal(size=(60, 24))
    vectors = unit(np.concatenate([base + rng.normal(scale=s, size=base.shape) for s in (0, 0.2, 0.5, 0.8)]))
    vectors = vectors[rng.permutation(len(vectors))]
    sims, ids = nearest_neighbours(vectors, get_registry().get("index", "exact"))
    members = np.arange(5, 5 + len(vectors))            # the group's images among others
    kept_everywhere = rng.random(len(vectors) + 9) < 0.6
    whole, parted = Neighbourhood.empty(len(vectors) + 9), Neighbourhood.empty(len(vectors) + 9)
    whole.add_group(members, [(sims, ids)], kept_everywhere)
    cuts = [0, 50, 51, 170, len(vectors)]
    parted.add_group(members, [(sims[a:b], ids[a:b]) for a, b in zip(cuts, cuts[1:])], kept_everywhere)
    for name in ("nn_similarity", "kept_bits", "closest_kept", "closest_kept_similarity"):
        assert np.array_equal(getattr(whole, name), getattr(parted, name), equal_nan=name != "kept_bits"), name
    assert kept_counts(whole.kept_bits[members])[0] < len(vectors) and (whole.closest_kept >= 0).any()


def test_nearest_neighbours_leave_out_the_image_itself_and_pad_small_groups():
    """Each image's nearest whatever its similarity (the histogram's), the next ones from
    NEIGHBOURS_FROM (0.5) up: below it they chart nothing."""
    vectors = unit([[1, 0], [0.8, 0.6], [0.6, 0.8], [-1, 0.05]])
    sims, ids = nearest_neighbours(vectors, get_registry().get("index", "exact"), 4)
    assert ids[1].tolist() == [2, 0, -1, -1] and sims[1, :2] == pytest.approx([0.96, 0.8])
    assert ids[0].tolist() == [1, 2, -1, -1] and np.isneginf(sims[0, 2:]).all()   # [-1, 0.05] is below 0.5
    assert ids[3].tolist() == [2, -1, -1, -1] and sims[3, 0] < 0                   # its nearest, however far


def test_threshold_labels_stack_instead_of_overlapping():
    values = [0.85, 0.84, 0.86, 0.7]
    rows = label_rows(values, lambda v: v * 600)
    assert rows[3] == 0 and len({rows[0], rows[1], rows[2]}) == 3
    for a in range(4):
        for b in range(a + 1, 4):
            if rows[a] == rows[b]:
                assert abs(values[a] - values[b]) * 600 >= LABEL_GAP


def test_histogram_has_count_ticks_on_its_y_axis():
    assert nice_ticks(37) == [0, 10, 20, 30, 40] and nice_ticks(3) == [0, 1, 2, 3] and nice_ticks(0) == [0, 1]
    svg = histogram_svg([0, 0.5, 1.0], [3, 1234], [0.9])
    ticks = [int(t.replace(",", "")) for t in re.findall(r'text-anchor="end">([\d,]+)<', svg)]
    assert ticks[0] == 0 and ticks[-1] >= 1234 and len(ticks) >= 3
    assert "images</text>" in svg and ">0.9</text>" in svg


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    """The demo at three thresholds, two of them close (their labels must not collide)."""
    tmp = tmp_path_factory.mktemp("report")
    out = tmp / "out.json"
    run_curate("dedup", DEMO, "-o", out, "--image-root", ROOT_IMAGES, "--embedder", "timm-pool", "-t", "0.85",
               "-t", "0.84", "-t", "0.7", "--cache", tmp / "cache", "-q", "--verify", "none", check=0)
    # --verify none: the curve and the closest kept pairs describe the signals' own decision
    # (with verification, look-alikes above the threshold stay and are listed as such)
    folder = Path(str(out) + ".report")
    return folder, json.loads((folder / "report.json").read_text())


@pytest.mark.slow
def test_closest_kept_pairs_both_stayed_and_lie_below_the_lowest_threshold(demo_report):
    folder, data = demo_report
    removed = {r["image"] for r in map(json.loads, (folder / "removed.jsonl").read_text().splitlines())}
    removed |= {p["image"] for block in data["thresholds"] for p in block["pairs"]}
    pairs = [p for source in data["closest_kept_pairs"].values() for p in source]
    assert pairs, "the demo has kept images with neighbours"
    for p in pairs:
        assert p["score"] < 0.7 and p["image"] not in removed and p["neighbour"] not in removed
    for source in data["closest_kept_pairs"].values():
        scores = [p["score"] for p in source]
        assert scores == sorted(scores, reverse=True)
    assert "## Closest pairs kept" in (folder / "report.md").read_text()


@pytest.mark.slow
def test_kept_curve_meets_the_run_where_only_the_embedding_fired(demo_report):
    _, data = demo_report
    curve = data["kept_curve"]["gqa"]
    assert curve["thresholds"][0] == 0.5 and curve["thresholds"][-1] == 1.0
    assert curve["kept"][-1] == curve["images"] == 5        # no two gqa images are the same
    for block in data["thresholds"]:
        row = next(r for r in block["table"] if r["source"] == "gqa")
        # an exact or phash match can only remove more than the embedding alone
        assert row["kept"] <= curve["kept"][curve["thresholds"].index(block["threshold"])]


def _many_sources(root: Path, sources: int, per_source: int) -> Path:
    """Busy, poorly compressible pictures in many sources, every other one a near-copy; long
    ids, folder and file names, of the characters that HTML escaping makes longest."""
    rng = np.random.default_rng(1)
    records = []
    folder_tail, name_head = "&<" * 100, '"' * 200
    for s in range(sources):
        for k in range(per_source):
            rel = f"src{s:02d}{folder_tail}/{name_head}{k:03d}.jpg"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            if k % 2 == 0:
                blocks = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
                image = Image.fromarray(blocks).resize((320, 240), Image.NEAREST)
                noise = rng.integers(-40, 40, (240, 320, 3))
                image = Image.fromarray(np.clip(np.asarray(image, int) + noise, 0, 255).astype(np.uint8))
            else:
                image = Image.open(root / rel.replace(f"{k:03d}.jpg", f"{k - 1:03d}.jpg")).resize((300, 225))
            image.save(root / rel, quality=95)
            records.append({"id": f"{s}-{k}" + '"' * 2000, "image": rel,
                            "conversations": [{"from": "human", "value": "<image>\nWhat?"},
                                              {"from": "gpt", "value": "This."}]})
    data = root / "data.json"
    data.write_text(json.dumps(records))
    return data


@pytest.mark.slow
def test_page_stays_small_whatever_the_dataset(tmp_path):
    data = _many_sources(tmp_path / "images", sources=30, per_source=12)
    out = tmp_path / "out.json"
    run_curate("dedup", data, "-o", out, "--image-root", tmp_path / "images", "--embedder", "timm-pool",
               "-t", "0.95", "-t", "0.8", "-t", "0.5", "--cache", tmp_path / "cache", "-q", check=0)
    folder = Path(str(out) + ".report")
    html = (folder / "report.html").read_text()
    assert len(html.encode()) < PAGE_LIMIT
    assert html.count("<img ") >= 100                     # the budget is used, not just refused
    assert "more sources are in report.json" in html      # 30 sources, not all drawn
    assert len(json.loads((folder / "report.json").read_text())["kept_curve"]) == 30


def test_a_string_from_the_data_is_shown_whole_or_cut_in_the_middle():
    assert shown("coco/train2017/1.jpg") == "coco/train2017/1.jpg"
    long = "start-" + "x" * 1_000_000 + "-end.jpg"
    cut = shown(long)
    assert len(cut) <= SHOWN_CHARS and cut.startswith("start-") and cut.endswith("-end.jpg") and "…" in cut


def test_ids_of_a_megabyte_are_cut_on_the_pages_and_whole_in_the_data(tmp_path):
    """Five ids of 1 MB among the closest kept pairs once made report.html 6 MB."""
    records = load_json(DEMO)
    for i, record in enumerate(records):
        record["id"] = f"{i}-" + '"&<' * 350_000            # each character 4 to 6 bytes once escaped
    source = tmp_path / "in.json"
    source.write_text(json.dumps(records))
    out = tmp_path / "out.json"
    run_curate("dedup", source, "--from", "llava", "-o", out, "--image-root", ROOT_IMAGES, "--embedder",
               "timm-pool", "-t", "0.85", "-t", "0.7", "--cache", tmp_path / "cache", "-q", check=0)
    folder = Path(str(out) + ".report")
    assert (folder / "report.html").stat().st_size < 300_000
    assert (folder / "report.md").stat().st_size < 30_000
    assert "…" in (folder / "report.html").read_text() and "…" in (folder / "report.md").read_text()
    ids = {record["id"] for record in records}           # the data files keep every id whole
    data = json.loads((folder / "report.json").read_text())
    kept = [p for pairs in data["closest_kept_pairs"].values() for p in pairs]
    assert kept and all(p["id"] in ids and p["neighbour_id"] in ids for p in kept)
    assert all(r["id"] in ids for r in load_json(folder / "removed.jsonl"))


PROBE = """<script>
window.addEventListener('load', () => {
  const boxes = svg => [...svg.querySelectorAll('.thr-label')].map(t => t.getBoundingClientRect());
  const overlap = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  let overlaps = 0;
  for (const svg of document.querySelectorAll('svg')) {
    const b = boxes(svg);
    for (let i = 0; i < b.length; i++) for (let j = i + 1; j < b.length; j++) if (overlap(b[i], b[j])) overlaps++;
  }
  const images = [...document.images];
  const probe = document.createElement('pre');
  probe.id = 'probe';
  probe.textContent = JSON.stringify({
    overlaps, images: images.length, broken: images.filter(i => !i.complete || i.naturalWidth === 0).length,
    charts: document.querySelectorAll('svg.hist').length, curves: document.querySelectorAll('svg.curve').length,
    yTicks: document.querySelectorAll('svg.hist text[text-anchor=end]').length,
    width: document.documentElement.scrollWidth});
  document.body.appendChild(probe);
});
</script>"""


def _chromium():
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("chromium is not installed (apt-get install chromium); .ci/run installs it")
    return found


def _browser(chromium, profile: Path, *args):
    return subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           "--hide-scrollbars", f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_report_in_headless_chromium_labels_images_and_screenshot(demo_report, tmp_path):
    chromium = _chromium()
    folder, _ = demo_report
    page = tmp_path / "probed.html"
    html = (folder / "report.html").read_text()
    page.write_text(html.replace("</body>", PROBE + "</body>"))
    dom = _browser(chromium, tmp_path / "profile", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()).stdout
    probe = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dom).group(1).replace("&quot;", '"'))
    assert probe["overlaps"] == 0 and probe["broken"] == 0
    assert probe["images"] >= 8 and probe["charts"] == probe["curves"] == 3 and probe["yTicks"] >= 3 * 3
    assert probe["width"] <= 1280                          # nothing forces sideways scrolling
    shot = tmp_path / "report.png"
    _browser(chromium, tmp_path / "profile2", f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri())
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    bars = (np.abs(pixels - (0x4a, 0x78, 0xc2)).sum(axis=1) < 30).mean()
    curve = (np.abs(pixels - (0x22, 0xaa, 0x77)).sum(axis=1) < 40).mean()
    assert bars > 0.0005 and curve > 0.0001                # histogram bars and the kept curve are drawn
    assert len(np.unique(pixels[::97], axis=0)) > 500      # photographs, not an empty page
