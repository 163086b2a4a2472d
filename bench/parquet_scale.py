"""Parquet at scale: the_cauldron-shaped shards -> LLaVA JSON with the images as files.

    python bench/parquet_scale.py                 # 1 GB of shards (a quick run)
    python bench/parquet_scale.py --gb 5          # the issue's 5 GB
    python bench/parquet_scale.py --repeat 3      # alternate the two tools 3 times (a loaded machine)

The same conversion two ways, in the same run, each in its own process (wall time, CPU time
and peak RSS of the process):

- curate: ``curate convert hf-parquet llava SHARDS/ -o out.json --extract-images DIR``
  (streamed by row group; each distinct image written once).
- datasets: ``load_dataset("parquet", data_dir=SHARDS)`` (which first copies the shards into
  its Arrow cache, a fresh one here, as on a first load), then ``.map`` writing each image's
  bytes to a file and building the LLaVA record, then ``json.dump`` of the records: what the
  LLaVA-NeXT issues (#222, #313) show people writing, without re-encoding the images.

Each run's outputs are deleted before the next (the disk holds the shards and one tool's
outputs at a time); ``datasets``' side is skipped, and said so, when the free disk cannot hold
its Arrow cache and its images (over twice the shards). With ``--repeat``, the two alternate,
and the table gives each tool's median.

Shards are generated: distinct JPEGs (one photo-sized JPEG with a unique trailer after its
end marker, so every image has other bytes), 100 rows per row group as ``datasets`` writes them.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table, run_measured_cpu  # noqa: E402


DATASETS_BASELINE = r"""
import json, os, sys
from datasets import Image, Sequence, load_dataset
shards, out, images = sys.argv[1], sys.argv[2], sys.argv[3]
ds = load_dataset("parquet", data_dir=shards, split="train")
ds = ds.cast_column("images", Sequence(Image(decode=False)))
os.makedirs(images, exist_ok=True)

def convert(row, idx):
    names = []
    for j, image in enumerate(row["images"]):
        name = f"{idx}_{j}.jpg"
        with open(os.path.join(images, name), "wb") as f:
            f.write(image["bytes"])
        names.append(name)
    turns = []
    for k, pair in enumerate(row["texts"]):
        question = ("<image>\n" * len(names) if k == 0 else "") + pair["user"]
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": pair["assistant"]}]
    record = {"id": str(idx), "image": names[0] if len(names) == 1 else names, "conversations": turns}
    return {"record": json.dumps(record)}

records = ds.map(convert, with_indices=True, remove_columns=ds.column_names)
with open(out, "w") as f:
    json.dump([json.loads(r) for r in records["record"]], f)
"""


def photo_jpeg(side: int = 640) -> bytes:
    from PIL import Image
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (side // 8, side // 8, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).resize((side, side), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=92)
    return out.getvalue()


def generate(folder: Path, gigabytes: float, rows_per_shard: int = 2000) -> tuple[int, int]:
    """Shards of about ``gigabytes`` in all; returns (rows, bytes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    base = photo_jpeg()
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    rows = int(gigabytes * 1e9 / len(base))
    folder.mkdir(parents=True, exist_ok=True)
    metadata = {b"huggingface": json.dumps({"info": {"features": {
        "images": {"feature": {"_type": "Image"}, "_type": "Sequence"}}}}).encode()}
    for start in range(0, rows, rows_per_shard):
        count = min(rows_per_shard, rows - start)
        cells = [[{"bytes": base + f"row {start + k}".encode(), "path": None}] for k in range(count)]
        table = pa.table({
            "images": pa.array(cells, pa.list_(image_type)),
            "texts": [[{"user": f"What is in picture {start + k}?", "assistant": "Noise, smoothed.",
                        "source": "bench"}] for k in range(count)],
        }).replace_schema_metadata(metadata)
        pq.write_table(table, folder / f"train-{start // rows_per_shard:05d}.parquet", row_group_size=100)
    return rows, sum(p.stat().st_size for p in folder.glob("*.parquet"))


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=1.0, help="size of the generated shards")
    parser.add_argument("--work", type=Path, default=None, help="folder for the shards and outputs")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each tool, alternating")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="curate-parquet-bench-"))
    try:
        shards = work / "the_cauldron" / "bench"
        rows, size = generate(shards, args.gb)
        print(f"{rows:,} rows, {size / 1e9:.2f} GB of Parquet in {len(list(shards.glob('*.parquet')))} shards")
        cache = work / "hf_cache"
        baseline = work / "baseline.py"
        baseline.write_text(DATASETS_BASELINE)
        os.environ.update(HF_DATASETS_CACHE=str(cache), HF_DATASETS_OFFLINE="1")
        runs: dict[str, list[tuple[float, float, float]]] = {"curate": [], "datasets": []}
        checks = []
        for _ in range(args.repeat):
            runs["curate"].append(run_measured_cpu([
                sys.executable, "-m", "curate", "convert", "hf-parquet", "llava", str(shards), "-o",
                str(work / "curate.json"), "--extract-images", str(work / "curate_images"), "-q"]))
            records = len(json.loads((work / "curate.json").read_text()))
            files = sum(1 for _ in (work / "curate_images").rglob("*.jpg"))
            (work / "curate.json").unlink()
            shutil.rmtree(work / "curate_images")
            free = shutil.disk_usage(work).free
            if free < 2.3 * size:
                print(f"datasets' side skipped: {free / 1e9:.1f} GB free, it needs about {2.2 * size / 1e9:.1f} GB "
                      "(its Arrow cache and the images)")
                continue
            runs["datasets"].append(run_measured_cpu([sys.executable, str(baseline), str(shards),
                                                  str(work / "datasets.json"), str(work / "datasets_images")]))
            checks.append(records == len(json.loads((work / "datasets.json").read_text())) == rows)
            for output in ("datasets_images", "hf_cache"):
                shutil.rmtree(work / output, ignore_errors=True)
            (work / "datasets.json").unlink()
        table = {tool: [median([run[k] for run in done]) for k in range(3)] for tool, done in runs.items() if done}
        wall, peak, cpu = table["curate"]
        rows_out = [["curate convert --extract-images", f"{wall:.1f}", f"{cpu:.1f}", f"{peak:.0f}"]]
        if "datasets" in table:
            d_wall, d_peak, d_cpu = table["datasets"]
            rows_out[0] += [f"{wall / d_wall:.2f}x", f"{cpu / d_cpu:.2f}x"]
            rows_out.append(["datasets load_dataset + map", f"{d_wall:.1f}", f"{d_cpu:.1f}", f"{d_peak:.0f}",
                             "1.00x", "1.00x"])
        else:
            rows_out[0] += ["-", "-"]
        print_table(f"the_cauldron-shaped Parquet -> LLaVA JSON + image files ({size / 1e9:.2f} GB, {rows:,} rows; "
                    f"median of {args.repeat}; records equal in number: {all(checks) if checks else '-'}; curate "
                    f"wrote {files:,} images)",
                    ["tool", "wall s", "CPU s", "peak RSS MB", "wall vs datasets", "CPU vs datasets"], rows_out)
        for tool, done in runs.items():
            print(f"{tool} runs (wall s, peak MB, CPU s): " + "; ".join(f"{w:.1f}, {p:.0f}, {c:.1f}" for w, p, c in done))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
