"""The filter report (#26 item 2): `curate filter` writes report.json, report.md and
report.html beside its output: per filter what it removed per source (the same counts as the
removed list), and for a threshold filter the removed and kept images nearest its threshold."""

import json
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import load_json, run_curate
from test_report import PAGE_LIMIT, _browser, _chromium

from curate.filter_report import NEAR_THRESHOLD, NearThreshold
from curate.sample import source_of

GREYS = range(0, 256, 3)             # 86 flat grey images: brightness g / 255 exactly


def record(id, image, answer="This."):
    return {"id": id, "image": image, "conversations": [{"from": "human", "value": "<image>\nWhat?"},
                                                        {"from": "gpt", "value": answer}]}


def grey_set(root: Path) -> list[dict]:
    """One flat grey image per level of GREYS, in two sources (a/, b/); every seventh answer empty."""
    records = []
    for k, g in enumerate(GREYS):
        image = f"{'ab'[k % 2]}/g{g:03d}.png"
        (root / image).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (48, 40), (g, g, g)).save(root / image)
        records.append(record(f"g{g}", image, "" if k % 7 == 3 else "This."))
    return records


def run_report(root: Path, records: list[dict], *filters, check=0):
    data = root / "data.json"
    data.write_text(json.dumps(records))
    out = root / "out.json"
    result = run_curate("filter", data, "--from", "llava", "-o", out, "--image-root", root, "--overwrite", "-q",
                        *[f"--filter={f}" for f in filters], check=check)
    return result, out, Path(str(out) + ".report")


def test_report_counts_each_filter_per_source_as_the_removed_list_does(tmp_path):
    _, out, folder = run_report(tmp_path, grey_set(tmp_path), "empty-answer", "dark", "light=0.9")
    removed = load_json(str(out) + ".removed.jsonl")
    listed = Counter((r["filter"], source_of(r["image"])) for r in removed)
    data = json.loads((folder / "report.json").read_text())
    reported = Counter({(f["name"], source): n for f in data["filters"] for source, n in f["by_source"].items()})
    assert reported == listed and len(listed) == 6           # three filters, each removing from both sources
    assert [f["removed"] for f in data["filters"]] == [sum(n for (f, _), n in listed.items() if f == name)
                                                       for name in ("empty-answer", "dark", "light")]
    assert data["sources"] == {"a": 43, "b": 43}
    assert data["accounting"]["removed"] == len(removed) and data["accounting"]["written"] == len(load_json(out))
    assert [(f["setting"], f.get("threshold")) for f in data["filters"]] == [(None, None), (None, 0.17), ("0.9", 0.9)]
    md = (folder / "report.md").read_text()
    total = re.search(r"^\| total \| 86 \| (.*) \|$", md, re.M).group(1)
    assert total == " | ".join(str(f["removed"]) for f in data["filters"]) + f" | {86 - len(removed)}"


def test_a_threshold_filter_shows_the_images_nearest_its_threshold_on_both_sides(tmp_path):
    _, _, folder = run_report(tmp_path, grey_set(tmp_path), "dark=0.21")
    dark = json.loads((folder / "report.json").read_text())["filters"][0]
    assert dark["measure"] == "99th percentile of brightness" and dark["removes"] == "under"
    by_distance = sorted(GREYS, key=lambda g: abs(g / 255 - 0.21))
    removed = [g for g in by_distance if g / 255 < 0.21][:NEAR_THRESHOLD]     # 51, 48, ... 18
    kept = [g for g in by_distance if g / 255 >= 0.21][:NEAR_THRESHOLD]       # 54, 57, ... 87
    near = dark["near_threshold"]
    assert [e["id"] for e in near["removed"]] == [f"g{g}" for g in removed]
    assert [e["id"] for e in near["kept"]] == [f"g{g}" for g in kept]
    assert all(abs(e["value"] - int(e["id"][1:]) / 255) < 1e-3 for e in near["removed"] + near["kept"])
    html = (folder / "report.html").read_text()
    middle = html.index("Kept nearest the threshold")
    for side, part in (("removed", html[:middle]), ("kept", html[middle:])):
        for e in near[side]:                  # each image captioned with its measure, on its side
            assert f"<b>{e['value']:g}</b><br>{e['image']} ({e['id']})" in part
    assert html.count("<img ") == 2 * NEAR_THRESHOLD


def test_each_threshold_filter_charts_where_its_measure_fell_with_the_threshold_marked(tmp_path):
    _, _, folder = run_report(tmp_path, grey_set(tmp_path), "empty-answer", "dark", "too-small=45")
    filters = {f["name"]: f for f in json.loads((folder / "report.json").read_text())["filters"]}
    assert "histogram" not in filters["empty-answer"]
    from curate.plugins.image_look import decode
    judged = [r["image"] for k, r in enumerate(grey_set(tmp_path)) if k % 7 != 3]      # what empty-answer left
    values = [decode(str(tmp_path / image)).dark_score for image in judged]          # about g / 255
    dark = filters["dark"]["histogram"]
    assert not dark["log"] and dark["edges"][0] == 0 and dark["edges"][-1] == 1 and len(dark["counts"]) == 40
    assert dark["counts"] == np.histogram(values, bins=dark["edges"])[0].tolist()
    small = filters["too-small"]["histogram"]           # every image is 48 x 40: one bar, on a log axis
    assert small["log"] and sum(small["counts"]) == len(judged) - filters["dark"]["removed"]
    bar = next(k for k, n in enumerate(small["counts"]) if n)
    assert small["edges"][bar] <= 40 < small["edges"][bar + 1]
    html = (folder / "report.html").read_text()
    assert html.count('<svg class="hist"') == 2
    for name, threshold in (("dark", "0.17"), ("too-small", "45")):
        section = html[html.index(f"<h2>{name}: "):]
        chart = section[section.index('<svg class="hist"'):section.index("</svg>")]
        assert f'class="thr-label"' in chart and f">{threshold}</text>" in chart


def test_near_threshold_keeps_the_nearest_of_any_stream():
    rng = random.Random(5)
    values = [rng.uniform(0, 1) for _ in range(5000)]
    near = NearThreshold(0.3, size=7)
    for k, v in enumerate(values):
        near.add(v, v < 0.3, lambda k=k: {"id": k})
    for removed in (True, False):
        side = [k for k, v in enumerate(values) if (v < 0.3) == removed]
        expected = sorted(side, key=lambda k: abs(values[k] - 0.3))[:7]
        assert [e["id"] for e in near.nearest(removed)] == expected


def _hostile_set(root: Path, sources: int = 30, per_source: int = 8) -> list[dict]:
    """Noisy, poorly compressible images of graded brightness in many sources, with long ids,
    folder and file names of the characters that HTML escaping makes longest."""
    rng = np.random.default_rng(3)
    records = []
    for s in range(sources):
        folder, name_head = f"src{s:02d}" + "&<" * 100, '"' * 200
        for k in range(per_source):
            image = f"{folder}/{name_head}{k:02d}.jpg"
            (root / image).parent.mkdir(parents=True, exist_ok=True)
            level = 10 + 240 * k / per_source
            blocks = np.clip(level + rng.uniform(-60, 60, (30 + 3 * k, 50, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(blocks).resize((200, 120 + 12 * k), Image.NEAREST).save(root / image, quality=95)
            records.append(record(f"{s}-{k}" + '"&<' * 30_000, image, "" if k == 3 else "This."))
    return records


def test_the_page_stays_small_with_hostile_ids_paths_and_many_sources(tmp_path):
    records = _hostile_set(tmp_path)
    splitting = ["too-small=130", "odd-aspect=1.45", "dark=0.5", "light=0.65", "blurry=0.197", "low-info=8.4835"]
    keeping = ["flat=1", "dark=0.01", "light=0.99", "blurry=0.9", "low-info=1", "too-small=2", "odd-aspect=50"]
    _, out, folder = run_report(tmp_path, records, "empty-answer", *splitting, *keeping)
    html = (folder / "report.html").read_text()
    assert len(html.encode()) < PAGE_LIMIT
    assert html.count("<img ") >= 150                       # the budget is used, not refused
    assert "more sources are in report.json" in html and "…" in html
    assert (folder / "report.md").stat().st_size < 30_000
    data = json.loads((folder / "report.json").read_text())
    ids = {r["id"] for r in records}
    assert len(data["sources"]) == 30                      # report.json has everything, ids whole
    assert all(e["id"] in ids for f in data["filters"] for e in f.get("near_threshold", {}).get("kept", []))


def test_a_failed_run_leaves_no_report(tmp_path):
    records = grey_set(tmp_path)[:5] + [{"id": "bad", "image": 7, "conversations": "not a list"}]
    result, out, folder = run_report(tmp_path, records, "dark", check=None)
    assert result.returncode != 0
    assert not out.exists() and not (folder / "report.json").exists() and not (folder / "report.html").exists()


PROBE = """<script>
window.addEventListener('load', () => {
  const images = [...document.images];
  const probe = document.createElement('pre');
  probe.id = 'probe';
  probe.textContent = JSON.stringify({images: images.length,
    broken: images.filter(i => !i.complete || i.naturalWidth === 0).length,
    figures: document.querySelectorAll('.one').length, width: document.documentElement.scrollWidth});
  document.body.appendChild(probe);
});
</script>"""


def test_report_renders_in_headless_chromium(tmp_path):
    chromium = _chromium()
    _, _, folder = run_report(tmp_path, grey_set(tmp_path), "empty-answer", "dark", "light=0.9")
    page = tmp_path / "probed.html"
    page.write_text((folder / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    run = _browser(chromium, tmp_path / "profile", "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    probe = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', run.stdout).group(1).replace("&quot;", '"'))
    data = json.loads((folder / "report.json").read_text())
    shown = sum(len(f["near_threshold"]["removed"]) + len(f["near_threshold"]["kept"])
                for f in data["filters"] if "near_threshold" in f) + len(data["filters"][0]["first_removed"])
    assert probe == {"images": shown, "broken": 0, "figures": shown, "width": probe["width"]}
    assert probe["width"] <= 1280                          # nothing forces sideways scrolling


def test_report_goes_where_report_says(tmp_path):
    data = tmp_path / "data.json"
    data.write_text(json.dumps(grey_set(tmp_path)[:6]))
    run_curate("filter", data, "-o", tmp_path / "out.json", "--image-root", tmp_path, "--filter", "dark",
               "--report", tmp_path / "mine", "-q", check=0)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["report.html", "report.json", "report.md"]
    assert not (tmp_path / "out.json.report").exists()
