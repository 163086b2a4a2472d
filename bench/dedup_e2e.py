"""Dedup end to end on a generated root of images (variants of the shared photographs):
time per stage, images/s, peak memory, and the same run resumed from its cache.

    python bench/dedup_e2e.py --images 5000
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED, print_table, run_measured  # noqa: E402

PHOTOS = SHARED / "data" / "images"


def make_root(root: Path, count: int, seed: int = 0) -> Path:
    """``count`` JPEGs: crops, resizes, re-encodes and mirror images of the shared photos, in two sources."""
    rng = random.Random(seed)
    photos = [Image.open(p).convert("RGB") for p in sorted(PHOTOS.glob("*.jpg"))]
    records = []
    for i in range(count):
        image = photos[i % len(photos)]
        w, h = image.size
        keep = rng.uniform(0.8, 1.0)
        left, top = rng.randint(0, int(w * (1 - keep))), rng.randint(0, int(h * (1 - keep)))
        image = image.crop((left, top, left + int(w * keep), top + int(h * keep)))
        scale = rng.uniform(0.5, 1.0)
        image = image.resize((max(32, int(image.width * scale)), max(32, int(image.height * scale))))
        if rng.random() < 0.3:
            image = ImageOps.mirror(image)
        source = "coco/train2017" if i % 2 else "gqa/images"
        relative = f"{source}/{i:012d}.jpg"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        image.save(root / relative, quality=rng.randint(40, 95))
        records.append({"id": f"r{i}", "image": relative, "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image."}, {"from": "gpt", "value": "A photo."}]})
    data = root / "data.json"
    data.write_text(json.dumps(records))
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    curate = [sys.executable, "-m", "curate.cli"]
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent.parent) as tmp:
        tmp = Path(tmp)
        data = make_root(tmp / "root", args.images)
        rows = []
        for run in ("first run", "re-run from cache"):
            out = tmp / f"{run[:2]}.json"
            wall, peak = run_measured([*curate, "dedup", str(data), "-o", str(out), "--image-root", str(tmp / "root"),
                                       "--embedder", "timm-pool", "--cache", str(tmp / "cache"), "-t", "0.9",
                                       "-t", "0.8", "--workers", str(args.workers), "-q"])
            report = json.loads((Path(str(out) + ".report") / "report.json").read_text())
            stages = report["stages_seconds"]
            emb = report["embedding"]
            rate = emb["embedded"] / stages["embed"] if emb["embedded"] else 0
            kept = {b["threshold"]: b["table"][-1]["kept"] for b in report["thresholds"]}
            rows.append([run, f"{wall:.1f}", f"{stages['scan']:.1f}", f"{stages['embed']:.1f}",
                         f"{stages['search']:.1f}", f"{stages['write']:.1f}", f"{rate:.1f}", emb["embedded"],
                         emb["cached"], f"{peak:,.0f}", f"{kept[0.9]:,} / {kept[0.8]:,}"])
        print_table(f"curate dedup, timm-pool (EfficientNet-Lite0), {args.images:,} images, {args.workers} workers",
                    ["run", "wall s", "scan s", "embed s", "search s", "write s", "images/s", "embedded",
                     "from cache", "peak MB", "kept at 0.9 / 0.8"], rows)
        first, second = float(rows[0][3]), float(rows[1][3])
        print(f"\nratio: re-run embedding time / first run = {second / first:.3f}")


if __name__ == "__main__":
    main()
