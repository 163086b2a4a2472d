"""How well curate's image filters find defective images, beside cleanvision's, on one set.

The set: real photos (../shared/data/images and fixtures/images, each also as a centre crop
and at long side 1,024) and, made from them on purpose, each defect at graded strength. The
weakest grades are not defects (an image to keep: a little blur, a dim photo) and the stronger
ones are; GRADES says which. Each filter is scored against its own defect:

- recall: of the images with that defect (at a defect grade), the share it flags;
- precision: of the images it flags that should be kept (clean photos and weak grades) or have
  its defect, the share with its defect. Flagging an image that has another real defect is no
  false removal (it goes anyway), so it counts on neither side.

cleanvision (``pip install cleanvision`` into the benchmark's environment, never a dependency of
curate) runs once on every image that Pillow can load (a truncated file stops its whole run),
with its default thresholds. Its issues map onto our defects as in PEERS.

    python bench/filter_quality.py [--work DIR] [--no-cleanvision]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import print_table  # noqa: E402

SHARED = Path(os.environ.get("CURATE_SHARED", ROOT.parent / "shared"))
PHOTOS = [SHARED / "data" / "images", ROOT / "fixtures" / "images"]

# defect -> [(grade, is a defect)], weakest first
GRADES = {
    "blur": [(0.001, False), (0.0025, False), (0.005, True), (0.01, True), (0.02, True)],   # radius / long side
    "dark": [(0.6, False), (0.35, False), (0.15, True), (0.07, True), (0.02, True)],       # brightness x k
    "light": [(0.6, False), (0.35, False), (0.15, True), (0.07, True), (0.02, True)],      # 255 - (255 - x) k
    "small": [(96, False), (48, False), (24, True), (16, True), (8, True)],                # shorter side, px
    "aspect": [(3, False), (10, False), (50, False), (250, True), (400, True)],            # long / short
    "flat": [("contrast 0.3", False), ("contrast 0.15", False), ("noise 2", True), ("noise 1", True),
             ("solid", True), ("blank page", True)],
    "low-info": [(32, False), (8, False), (3, True), (2, True)],                            # colours
    "truncated": [("jpeg 99%", True), ("jpeg 90%", True), ("jpeg 50%", True), ("png 90%", True)],
    "wrong-format": [("GIF as .jpg", True), ("PNG as .jpg", True), ("WEBP as .png", True),
                     ("JPEG as .png", True)],
}
OURS = {"unreadable": "truncated", "wrong-format": "wrong-format", "too-small": "small",
        "odd-aspect": "aspect", "flat": "flat", "blurry": "blur", "dark": "dark", "light": "light",
        "low-info": "low-info"}
PEERS = {"blurry": "blur", "dark": "dark", "light": "light", "odd_aspect_ratio": "aspect",
         "odd_size": "small", "low_information": "low-info"}
# skimage's clock_motion is a motion-blurred photo: no clean image, and no base for graded blur
NOT_CLEAN = {"skimage_clock_motion"}
ALSO = {"low-info": {"flat"}}      # a flat image is low-information too: a hit, not a false removal


def photos() -> list[tuple[str, Image.Image]]:
    seen, found = set(), []
    for folder in PHOTOS:
        for path in sorted(folder.rglob("*.jpg")):
            if path.name not in seen and path.stem not in NOT_CLEAN:
                seen.add(path.name)
                found.append((path.stem, Image.open(path).convert("RGB")))
    return found


def clean_variants(name, image):
    w, h = image.size
    yield f"{name}", image
    yield f"{name}_crop", image.crop((w // 5, h // 5, w - w // 5, h - h // 5))
    scale = 1024 / max(w, h)
    yield f"{name}_1024", image.resize((round(w * scale), round(h * scale)), Image.Resampling.LANCZOS)


def at_long_side(image, side=640):
    scale = side / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                        Image.Resampling.LANCZOS)


def degrade(defect, grade, image, rng):
    """The image with ``defect`` at ``grade``; returns (image, format, extension) or bytes."""
    if defect == "blur":
        base = at_long_side(image)
        return base.filter(ImageFilter.GaussianBlur(grade * 640))
    if defect == "dark":
        return Image.eval(image, lambda x: round(x * grade))
    if defect == "light":
        return Image.eval(image, lambda x: round(255 - (255 - x) * grade))
    if defect == "small":
        scale = grade / min(image.size)
        return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                            Image.Resampling.LANCZOS)
    if defect == "aspect":
        w, h = image.size
        strip = image.crop((0, h // 2 - max(1, w // grade) // 2, w, h // 2 - max(1, w // grade) // 2 + max(1, w // grade)))
        return strip.resize((40 * grade, 40), Image.Resampling.BILINEAR)
    if defect == "flat":
        if grade.startswith("contrast"):
            return ImageEnhance.Contrast(image).enhance(float(grade.split()[1]))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if grade == "blank page":
            page = Image.new("RGB", (600, 800), (250, 250, 248))
            page.paste((30, 30, 30), (290, 390, 296, 396))         # one speck
            return page
        solid = np.full((image.height, image.width, 3), colour, dtype=np.float32)
        if grade.startswith("noise"):
            solid += rng.normal(0, float(grade.split()[1]), solid.shape)
        return Image.fromarray(solid.clip(0, 255).astype(np.uint8))
    if defect == "low-info":
        return image.quantize(grade, dither=Image.Dither.NONE).convert("RGB")
    raise ValueError(defect)


def encoded(image, format, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def file_defect(defect, grade, image) -> tuple[bytes, str]:
    """Bytes and extension of a truncated or misnamed file."""
    if defect == "truncated":
        kind, percent = grade.split()
        data = encoded(image, "JPEG" if kind == "jpeg" else "PNG", quality=90)
        return data[:int(len(data) * int(percent.rstrip("%")) / 100)], ".jpg" if kind == "jpeg" else ".png"
    source, _, extension = grade.partition(" as ")
    options = {"quality": 90} if source in ("JPEG", "WEBP") else {}
    return encoded(image.convert("P") if source == "GIF" else image, source, **options), extension


def build(folder: Path) -> list[dict]:
    """Write the set under ``folder``; one row per image: file, defect (None: clean), grade, is_defect."""
    rng = np.random.default_rng(0)
    rows = []
    base = photos()
    for name, image in base:
        for variant, picture in clean_variants(name, image):
            picture.save(folder / f"clean_{variant}.jpg", quality=90)
            rows.append({"file": f"clean_{variant}.jpg", "defect": None, "grade": None, "is_defect": False})
    pick = random.Random(0)
    for defect, grades in GRADES.items():
        for grade, is_defect in grades:
            chosen = base if defect not in ("truncated", "wrong-format", "flat") else pick.sample(base, 6)
            for name, image in chosen:
                tag = str(grade).replace(" ", "_").replace("%", "").replace(".", "_")
                stem = f"{defect}_{tag}_{name}"
                if defect in ("truncated", "wrong-format"):
                    data, extension = file_defect(defect, grade, image)
                    (folder / (stem + extension)).write_bytes(data)
                    file = stem + extension
                else:
                    degrade(defect, grade, image, rng).save(folder / f"{stem}.png") if defect in ("flat", "low-info") \
                        else degrade(defect, grade, image, rng).save(folder / f"{stem}.jpg", quality=90)
                    file = f"{stem}.png" if defect in ("flat", "low-info") else f"{stem}.jpg"
                rows.append({"file": file, "defect": defect, "grade": grade, "is_defect": is_defect})
    return rows


def run_ours(folder: Path, rows: list[dict]) -> tuple[dict[str, set], float]:
    """Each built-in image filter's flags, through its ``decide``, one decoded look per image
    shared by all filters (as in a run); and the seconds per image for all of them."""
    from curate.images import ImageLocator
    from curate.plugins import filters as builtin
    from curate.sample import Sample, Turn
    from curate.stages import Item
    classes = {cls.name: cls for cls in builtin.FILTERS if cls.name in OURS}
    context = SimpleNamespace(images=ImageLocator(folder))
    stages = {name: cls() for name, cls in classes.items()}
    for stage in stages.values():
        stage.context = context
    flagged = {name: set() for name in stages}
    start = time.perf_counter()
    for row in rows:
        item = Item(folder, None, 0, Sample(row["file"], row["file"], [Turn("human", "<image>"), Turn("gpt", "a")]))
        for name, stage in stages.items():
            if stage.decide(item) is not None:
                flagged[name].add(row["file"])
    return flagged, (time.perf_counter() - start) / len(rows)


def run_cleanvision(folder: Path, rows: list[dict], python: str) -> tuple[dict[str, set], float, set]:
    """cleanvision's flags per issue on the images Pillow can load (in ``python``, its environment)."""
    loadable = set()
    for row in rows:
        try:
            with Image.open(folder / row["file"]) as image:
                image.load()
            loadable.add(row["file"])
        except Exception:
            pass
    script = f"""
import json, sys, time
from cleanvision import Imagelab
files = json.load(open(sys.argv[1]))
start = time.perf_counter()
lab = Imagelab(filepaths=files, verbose=False)
lab.find_issues(n_jobs=1, verbose=False)
took = time.perf_counter() - start
out = {{c[3:-6]: [f.rsplit('/', 1)[1] for f in lab.issues.index[lab.issues[c]]] for c in lab.issues.columns
        if c.startswith('is_') and c.endswith('_issue')}}
json.dump({{"flags": out, "seconds": took / len(files)}}, open(sys.argv[2], 'w'))
"""
    with tempfile.TemporaryDirectory() as temp:
        listing, answer = Path(temp) / "files.json", Path(temp) / "out.json"
        listing.write_text(json.dumps([str(folder / f) for f in sorted(loadable)]))
        subprocess.run([python, "-c", script, str(listing), str(answer)], check=True, stderr=subprocess.DEVNULL)
        result = json.loads(answer.read_text())
    return {name: set(files) for name, files in result["flags"].items()}, result["seconds"], loadable


def score(flagged: set, defect: str, rows: list[dict], seen: set | None = None) -> tuple[str, str, int, int]:
    """Precision and recall of ``flagged`` for ``defect`` (see the module's docstring)."""
    hits = {defect} | ALSO.get(defect, set())
    relevant = [r for r in rows if seen is None or r["file"] in seen]
    positives = {r["file"] for r in rows if r["defect"] == defect and r["is_defect"]}
    counted_hit = {r["file"] for r in relevant if r["defect"] in hits and r["is_defect"]}
    keep = {r["file"] for r in relevant if not r["is_defect"]}
    tp, fp = len(flagged & counted_hit), len(flagged & keep)
    found = len(flagged & positives)
    precision = f"{tp / (tp + fp):.2f}" if tp + fp else "-"
    return precision, f"{found / len(positives):.2f}", found, fp


def grade_table(rows, ours, peers):
    table = []
    for defect, grades in GRADES.items():
        our_name = next(name for name, d in OURS.items() if d == defect)
        peer_name = next((name for name, d in PEERS.items() if d == defect), None)
        for grade, is_defect in grades:
            files = {r["file"] for r in rows if r["defect"] == defect and r["grade"] == grade}
            mine = len(files & ours[our_name])
            theirs = "-" if peer_name is None or peers is None else len(files & peers.get(peer_name, set()))
            table.append([defect, grade, "yes" if is_defect else "no", len(files), mine, theirs])
    return table


def measures(folder, rows):
    """The range of each measure over the images to keep vs those with the defect."""
    from curate.plugins.image_look import decode
    values = defaultdict(lambda: defaultdict(list))
    for row in rows:
        seen = decode(str(folder / row["file"]))
        if seen.problem:
            continue
        group = "defect" if row["is_defect"] else "keep"
        for name, value in (("blur", seen.blur), ("dark p99", seen.brightness_percentile(99)),
                            ("light p5", seen.brightness_percentile(5)), ("spread", seen.spread),
                            ("entropy", seen.entropy)):
            family = {"blur": "blur", "dark p99": "dark", "light p5": "light", "spread": "flat",
                      "entropy": "low-info"}[name]
            if row["defect"] in (None, family) or not row["is_defect"]:
                values[name][group if row["defect"] in (None, family) or group == "keep" else "other"].append(value)
    table = []
    for name, groups in values.items():
        keep, defect = np.array(groups["keep"]), np.array(groups["defect"])
        table.append([name, f"{keep.min():.3f}", f"{np.percentile(keep, 1):.3f}", f"{np.percentile(keep, 99):.3f}",
                      f"{keep.max():.3f}", f"{defect.min():.3f}" if len(defect) else "-",
                      f"{defect.max():.3f}" if len(defect) else "-"])
    return table


def cli_cost(folder: Path, rows: list[dict]) -> float:
    """Seconds per image of a real ``curate filter`` run with every image filter, less the
    same run with no image filter (the reading and writing)."""
    data = folder.parent / "set.json"
    data.write_text(json.dumps([{"id": r["file"], "image": r["file"], "conversations": [
        {"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": f"image {r['file']}"}]}
        for r in rows]))
    curate = [sys.executable, "-m", "curate", "filter", str(data), "-q", "--overwrite", "--image-root", str(folder)]

    def timed(*filters):
        start = time.perf_counter()
        subprocess.run([*curate, "-o", str(folder.parent / "out.json"), *[f"--filter={f}" for f in filters]],
                       check=True, capture_output=True)
        return time.perf_counter() - start
    base = min(timed("empty-answer") for _ in range(2))
    full = min(timed(*OURS) for _ in range(2))
    return (full - base) / len(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="where to build the set [a temporary folder]")
    parser.add_argument("--cleanvision-python", default=sys.executable,
                        help="the Python that has cleanvision [this one]")
    parser.add_argument("--no-cleanvision", action="store_true")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="filter-quality-"))
    folder = work / "images"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rows = build(folder)
    if not (SHARED / "data" / "images").is_dir():
        print(f"note: no shared photos at {SHARED} (set CURATE_SHARED); fixtures only", file=sys.stderr)
    print(f"{len(rows)} images ({sum(r['defect'] is None for r in rows)} clean) in {folder}")
    ours, our_seconds = run_ours(folder, rows)
    _, clean_seconds = run_ours(folder, [r for r in rows if r["defect"] is None])
    peers, peer_seconds, loadable = (None, None, None) if args.no_cleanvision else \
        run_cleanvision(folder, rows, args.cleanvision_python)

    table = []
    for name, defect in OURS.items():
        precision, recall, found, fp = score(ours[name], defect, rows)
        peer = next((p for p, d in PEERS.items() if d == defect), None)
        if peer and peers is not None:
            p_precision, p_recall, p_found, p_fp = score(peers.get(peer, set()), defect, rows, loadable)
            theirs = [peer, p_precision, p_recall, p_fp]
        else:
            theirs = ["(none)" if peers is not None else "-", "-", "0.00" if peers is not None else "-", "-"]
        table.append([defect, name, precision, recall, fp, *theirs])
    print_table("Precision and recall per defect (fp: images to keep that were flagged)",
                ["defect", "curate", "precision", "recall", "fp", "cleanvision", "precision", "recall", "fp"], table)
    print_table("Flagged per grade", ["defect", "grade", "a defect", "images", "curate", "cleanvision"],
                grade_table(rows, ours, peers))
    print_table("Measures: images to keep vs images with that defect",
                ["measure", "keep min", "keep p1", "keep p99", "keep max", "defect min", "defect max"],
                measures(folder, rows))
    if peers is not None:
        also = {issue: len(files & {r["file"] for r in rows if r["defect"] is None})
                for issue, files in peers.items()}
        print(f"\ncleanvision on the {sum(r['defect'] is None for r in rows)} clean photos flags: {also}")
        print(f"cleanvision could not run on {len(rows) - len(loadable)} files Pillow cannot load (truncated)")
    cost = cli_cost(folder, rows)
    print(f"\ncost per image: curate's 9 image filters {our_seconds * 1000:.1f} ms in process, "
          f"{cost * 1000:.1f} ms over a filter-only CLI run; {clean_seconds * 1000:.1f} ms in process on the clean photos"
          + (f"; cleanvision's 7 image-property issues {peer_seconds * 1000:.1f} ms (n_jobs=1)" if peers else ""))


if __name__ == "__main__":
    main()
