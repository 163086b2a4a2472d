"""What the image filters cost (#26 item 3), all in one run, as CPU seconds per image:

- decode alone: Pillow decoding each file as the filters do (upright RGB at 384 px, JPEG draft);
- a filter-only ``curate filter`` run with every image filter, less the same run with a text
  filter only (reading and writing the dataset, start-up): the decode plus the measures;
- ``curate dedup`` without and with ``--filter`` (every image filter; the looks are taken from the
  embedder's decode): the filters' share of a dedup run.

CPU time (user + system, the process and its children) rather than wall time: the machine is
shared. The set: the photos of ../shared/data/images and fixtures/images, each whole, as a
centre crop and at long side 1,024 (bench/filter_quality.py's clean images), each also mirrored.

    python bench/filter_cost.py [--work DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import print_table  # noqa: E402
from filter_quality import OURS, clean_variants, photos  # noqa: E402

IMAGE_FILTERS = list(OURS)       # the 9 image filters


def build(folder: Path) -> Path:
    """The photo set as JPEGs (quality 90) and a LLaVA file naming them."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for name, image in photos():
        for variant, picture in clean_variants(name, image):
            for suffix, shown in (("", picture), ("_mirror", ImageOps.mirror(picture))):
                file = f"{variant}{suffix}.jpg"
                shown.save(folder / file, quality=90)
                names.append(file)
    data = folder / "set.json"
    data.write_text(json.dumps([{"id": n, "image": n, "conversations": [
        {"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": f"image {n}"}]}
        for n in names]))
    return data


def child_cpu(command: list[str]) -> float:
    """CPU seconds (user + system) of a child process and its children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def decode_alone(folder: Path, files: list[str]) -> float:
    """CPU seconds to decode every file as the filters' look does."""
    sys.path.insert(0, str(ROOT))
    from curate.images import load_rgb
    from curate.plugins.image_look import WORK_SIDE
    start = time.process_time()
    for name in files:
        load_rgb(folder / name, long_side=WORK_SIDE)
    return time.process_time() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command; the least CPU counts")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="filter_cost."))
    folder = work / "images"
    data = build(folder)
    files = [r["image"] for r in json.loads(data.read_text())]
    n = len(files)
    curate = [sys.executable, "-m", "curate"]
    every = [f"--filter={name}" for name in IMAGE_FILTERS]

    def filtered(*filters):
        return child_cpu([*curate, "filter", str(data), "-o", str(work / "f.json"), "-q", "--overwrite",
                          "--image-root", str(folder), *filters])

    def deduped(*filters):
        out = work / ("d_filters.json" if filters else "d.json")
        return child_cpu([*curate, "dedup", str(data), "-o", str(out), "-q", "--overwrite",
                          "--image-root", str(folder), "--embedder", "timm-pool", "--no-cache", "--workers", "2",
                          *filters])

    least = {}
    for _ in range(args.repeats):        # interleaved, so that a busy spell hits every command alike
        for key, run in (("decode", lambda: decode_alone(folder, files)),
                         ("filter text", lambda: filtered("--filter=empty-answer")),
                         ("filter images", lambda: filtered(*every)),
                         ("dedup", lambda: deduped()),
                         ("dedup + filters", lambda: deduped(*every))):
            least[key] = min(least.get(key, float("inf")), run())
    ms = {key: 1000 * seconds / n for key, seconds in least.items()}
    filters_only = ms["filter images"] - ms["filter text"]
    rows = [["decode alone (384 px, as the filters' look)", f"{ms['decode']:.2f}", "1.00"],
            ["curate filter, 9 image filters, less a text-only run", f"{filters_only:.2f}",
             f"{filters_only / ms['decode']:.2f}"],
            ["  of which beyond the decode", f"{filters_only - ms['decode']:.2f}", ""],
            ["curate dedup (timm-pool, --no-cache)", f"{ms['dedup']:.2f}", "1.00"],
            ["curate dedup --filter x9", f"{ms['dedup + filters']:.2f}", f"{ms['dedup + filters'] / ms['dedup']:.2f}"],
            ["  the filters' share of dedup", f"{ms['dedup + filters'] - ms['dedup']:.2f}", ""]]
    print_table(f"CPU ms per image, {n} photos, least of {args.repeats} runs each, os.cpu_count()={os.cpu_count()}",
                ["run", "CPU ms / image", "ratio"], rows)
    plain, filtered_run = (decisions(work / name) for name in ("d.json", "d_filters.json"))
    print(f"\ndedup's decisions with and without --filter: {sum(plain[k] == filtered_run[k] for k in plain)} of "
          f"{len(plain)} images the same")


def decisions(output: Path) -> dict:
    """Image -> (keep or remove, the image it duplicates) from a dedup run's decisions.jsonl."""
    rows = [json.loads(line) for line in (output.with_name(output.name + ".report") / "decisions.jsonl").open()]
    return {r["image"]: (r["decision"], r.get("duplicate_of")) for r in rows if "image" in r}


if __name__ == "__main__":
    main()
