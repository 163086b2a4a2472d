"""Conversion at full scale: `curate convert` against the whole-file scripts people write.

    python bench/convert_scale.py                       # 665,298 LLaVA records (~1 GB) + 100K SVIT QAs
    python bench/convert_scale.py --records 100000 --svit 20000 --repeats 1   # a quick run
    python bench/convert_scale.py --only llava --records 200000 --repeats 3 \
        --against /work/main/.venv/bin/curate            # and another build of curate, same rounds

Baselines, measured in the same run: `json.load` -> transform -> `json.dump`, and the same
with orjson. Each command runs in its own process; wall time and peak RSS are medians. The
LLaVA part runs its commands in rounds (one of each per round, so that a change of load on a
shared machine falls on all of them) and reports CPU time (user + system) beside the wall time.
Every curate runs with its bytecode cached in the run's own folder (PYTHONPYCACHEPREFIX, filled
by one warm-up run each), as an installed package has it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, SHARED, print_table, run_measured, run_measured_cpu  # noqa: E402

REAL = SHARED / "data" / "real" / "llava_v1_5_mix665k.every500.json"

JSON_BASELINE = """
import json, sys
records = json.load(open(sys.argv[1], encoding="utf-8"))
out = [dict(r) for r in records]                       # the per-record transform people write
json.dump(out, open(sys.argv[2], "w", encoding="utf-8"), ensure_ascii=False)
"""
ORJSON_BASELINE = """
import orjson, sys
records = orjson.loads(open(sys.argv[1], "rb").read())
out = [dict(r) for r in records]
open(sys.argv[2], "wb").write(orjson.dumps(out))
"""
SVIT_BASELINE = """
import json, orjson, random, re, sys
from PIL import Image
root = sys.argv[3]
rng = random.Random(0)
INSTR = ["Provide the bounding boxes of the mentioned objects.", "Include the coordinates for each mentioned object.",
         "Locate the objects with their coordinates."]
sizes = {}
def pad(m, w, h):
    b = [float(v) for v in m.group(1).split(",")]
    x1, y1, x2, y2 = round(b[0] * w), round(b[1] * h), round(b[2] * w), round(b[3] * h)
    s, d = max(w, h), (max(w, h) - min(w, h)) // 2
    if w > h: y1, y2 = y1 + d, y2 + d
    elif h > w: x1, x2 = x1 + d, x2 + d
    return "[" + ", ".join(repr(round(v / s, 3)) for v in (x1, y1, x2, y2)) + "]"
out = []
for rec in LOAD:
    folder = "VG_100K" if __import__("os").path.exists(f"{root}/vg/VG_100K/{rec['image_id']}.jpg") else "VG_100K_2"
    image = f"vg/{folder}/{rec['image_id']}.jpg"
    if image not in sizes:
        sizes[image] = Image.open(f"{root}/{image}").size
    w, h = sizes[image]
    for conv in rec["conversations"]:
        c = conv["content"]
        for k in range(0, len(c), 2):
            q = re.sub(r"\\[([^\\]]*)\\]", lambda m: pad(m, w, h), c[k]["value"].replace("<st>", "").replace("<ed>", ""))
            a = re.sub(r"\\[([^\\]]*)\\]", lambda m: pad(m, w, h), c[k + 1]["value"].replace("<st>", "").replace("<ed>", ""))
            out.append({"id": f"svit_referring_{len(out)}", "image": image, "conversations": [
                {"from": "human", "value": "<image>\\n" + q + " " + rng.choice(INSTR)}, {"from": "gpt", "value": a}]})
DUMP
"""
SVIT_JSON_BASELINE = (SVIT_BASELINE.replace("LOAD", "json.load(open(sys.argv[1]))")
                      .replace("DUMP", 'json.dump(out, open(sys.argv[2], "w"), ensure_ascii=False)'))
SVIT_ORJSON_BASELINE = (SVIT_BASELINE.replace("LOAD", 'orjson.loads(open(sys.argv[1], "rb").read())')
                        .replace("DUMP", 'open(sys.argv[2], "wb").write(orjson.dumps(out))'))


def make_llava(path: Path, count: int) -> None:
    """Repeat the real records with fresh ids (integer ids stay integers), as one line like the release."""
    records = json.loads(REAL.read_text())
    with open(path, "w", encoding="utf-8") as f:
        f.write("[")
        for i in range(count):
            record = dict(records[i % len(records)])
            rid = record["id"]
            record["id"] = rid * 1000 + i // len(records) if isinstance(rid, int) else f"{rid}_{i // len(records)}"
            f.write(("," if i else "") + json.dumps(record, ensure_ascii=False))
        f.write("]")


def _span(rng: random.Random) -> tuple[float, float]:
    """Two coordinates of a box side in [0, 1], the first smaller (a box has an area)."""
    while True:
        low, high = sorted(round(rng.random(), 3) for _ in range(2))
        if low < high:
            return low, high


def make_svit(folder: Path, count: int) -> tuple[Path, Path]:
    """SVIT referring QAs as the release has them: one record per Visual Genome image with ten
    QAs, images split over VG_100K and VG_100K_2 with sizes spread like Visual Genome's (long
    side 500 or 800, the other anything from 280 up), so that boxes meet many image sizes."""
    from PIL import Image
    root = folder / "vg_root"
    rng = random.Random(0)
    images = max(1, count // 10)
    for image_id in range(images):
        target = root / "vg" / ("VG_100K" if image_id % 2 else "VG_100K_2") / f"{image_id}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        long_side = rng.choice((500, 800, 800))
        size = (long_side, rng.randint(280, long_side))
        Image.new("RGB", size if rng.random() < 0.75 else size[::-1], (120, 90, 60)).save(target, quality=30)
    objects = ["man", "table", "dog", "red car", "woman in a hat", "window", "tree", "street sign", "plate", "boy"]

    def box():      # a fresh box for every mention: no whole-box cache can help
        x1, x2 = _span(rng)
        y1, y2 = _span(rng)
        return f"[{x1}, {y1}, {x2}, {y2}]"

    records, qa = [], 0
    while qa < count:
        image_id = len(records) % images
        content = []
        for _ in range(min(10, count - qa)):
            a, b = rng.sample(objects, 2)
            box_a = box()
            content += [{"from": "user", "value": f"What is the <st>{a}<ed> {box_a} doing near the <st>{b}<ed> "
                                                  f"{box()}?"},
                        {"from": "gpt", "value": f"The <st>{a}<ed> {box_a} holds two <st>cups<ed> {box()}, {box()} "
                                                 f"over the {b}, which suggests a meal is about to start."}]
            qa += 1
        records.append({"image_id": image_id, "conversations": [{"content": content}]})
    path = folder / "referring_qa.json"
    path.write_text(json.dumps(records))
    return path, root


def measure(label, command, repeats, rows, baseline=None):
    runs = [run_measured(command) for _ in range(repeats)]
    wall = statistics.median(r[0] for r in runs)
    peak = statistics.median(r[1] for r in runs)
    rows.append([label, f"{wall:.2f}", f"{peak:,.0f}", f"{wall / baseline:.2f}" if baseline else "1.00"])
    return wall, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=665_298)
    parser.add_argument("--svit", type=int, default=100_000, help="SVIT referring QAs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=("llava", "svit"), default=None, help="run one of the two parts")
    parser.add_argument("--against", default=None, help="another curate executable (e.g. main's build) for the LLaVA "
                                                        "part, run in the same rounds")
    args = parser.parse_args()
    if not REAL.exists():
        raise SystemExit(f"needs the shared data at {SHARED}")
    # An installed package has its bytecode (pip compiles it); a checkout run with
    # PYTHONDONTWRITEBYTECODE would compile curate's modules at every start instead.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "core"), str(ROOT / "plugins")], check=True)
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        if args.only != "svit":
            llava_part(Path(tmp), args)
        if args.only != "llava":
            svit_part(Path(tmp), args)


CURATE = [sys.executable, "-m", "curate.cli"]


def llava_part(tmp: Path, args) -> None:
    source = tmp / "llava.json"
    make_llava(source, args.records)
    size_mb = source.stat().st_size / 2**20
    curate_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    curate_env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    commands = {"json.load + json.dump": ([sys.executable, "-c", JSON_BASELINE, str(source), str(tmp / "a.json")], None),
                "orjson.loads + orjson.dumps": ([sys.executable, "-c", ORJSON_BASELINE, str(source),
                                                 str(tmp / "b.json")], None)}
    if args.against:
        commands[f"curate convert llava llava ({args.against})"] = (
            [args.against, "convert", "llava", "llava", str(source), "-o", str(tmp / "d.json"), "--overwrite", "-q"],
            curate_env)
    commands["curate convert llava llava"] = ([*CURATE, "convert", "llava", "llava", str(source), "-o",
                                               str(tmp / "c.json"), "--overwrite", "-q"], curate_env)
    warm_up = tmp / "one.json"
    warm_up.write_text(json.dumps(json.loads(REAL.read_text())[:1]))
    for command, env in commands.values():
        if env is not None:
            subprocess.run([str(warm_up) if part == str(source) else part for part in command], env=env, check=True,
                           capture_output=True)
    runs = {label: [] for label in commands}
    for _ in range(args.repeats):
        for label, (command, env) in commands.items():
            runs[label].append(run_measured_cpu(command, env))
    assert json.loads((tmp / "c.json").read_text()) == json.loads(source.read_text())
    if args.against:
        same = (tmp / "c.json").read_bytes() == (tmp / "d.json").read_bytes()
        print(f"output byte-identical to {args.against}'s: {same}")
    medians = {label: [statistics.median(r[k] for r in rs) for k in range(3)] for label, rs in runs.items()}
    base, orj, ours = (medians[label] for label in ("json.load + json.dump", "orjson.loads + orjson.dumps",
                                                     "curate convert llava llava"))
    rows = [[label, f"{wall:.2f}", f"{cpu:.2f}", f"{peak:,.0f}", f"{wall / orj[0]:.2f}", f"{cpu / orj[2]:.2f}"]
            for label, (wall, peak, cpu) in medians.items()]
    print_table(f"LLaVA: {args.records:,} records, {size_mb:,.0f} MB, {args.repeats} rounds (medians; load "
                f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end)",
                ["command", "wall s", "CPU s", "peak MB", "wall / orjson", "CPU / orjson"], rows)
    print(f"\nratios: curate/json = {ours[0] / base[0]:.2f} (target <= 0.5), curate/orjson = {ours[0] / orj[0]:.2f} "
          f"wall, {ours[2] / orj[2]:.2f} CPU (target <= 1.0), peak = {ours[1]:.0f} MB (target < 200)")
    if args.against:
        print("per round, this curate / the other (wall, CPU): " + ", ".join(
            f"{a[0] / b[0]:.2f} {a[2] / b[2]:.2f}" for a, b in zip(runs["curate convert llava llava"],
                                                                runs[f"curate convert llava llava ({args.against})"])))


def svit_part(tmp: Path, args) -> None:
    svit, root = make_svit(tmp, args.svit)
    half = tmp / "referring_qa.half.json"
    records = json.loads(svit.read_text())
    half.write_text(json.dumps(records[:len(records) // 2]))

    def ours(source, output):
        return [*CURATE, "convert", "svit", "llava", str(source), "-o", str(output), "--image-root", str(root),
                "--overwrite", "-q"]

    rows = []
    base, _ = measure("json script (release rules)", [sys.executable, "-c", SVIT_JSON_BASELINE, str(svit),
                                                       str(tmp / "s1.json"), str(root)], args.repeats, rows)
    orj, _ = measure("the same script with orjson", [sys.executable, "-c", SVIT_ORJSON_BASELINE, str(svit),
                                                     str(tmp / "s3.json"), str(root)], args.repeats, rows, base)
    wall, peak = measure("curate convert svit llava", ours(svit, tmp / "s2.json"), args.repeats, rows, base)
    _, half_peak = measure("curate, first half of the records", ours(half, tmp / "s4.json"), 1, rows, base)
    expected = json.loads((tmp / "s1.json").read_text())
    assert json.loads((tmp / "s2.json").read_text()) == expected == json.loads((tmp / "s3.json").read_text())
    print_table(f"SVIT referring: {args.svit:,} QAs over {len(list(root.rglob('*.jpg'))):,} images "
                "(wall s, peak RSS MB, ratio to json)", ["command", "wall s", "peak MB", "ratio"], rows)
    print(f"\nratios: curate/json = {wall / base:.2f} (target <= 0.5), curate/orjson script = {wall / orj:.2f}; "
          f"peak {half_peak:.0f} MB for half the input, {peak:.0f} MB for all of it (target: flat). "
          "Outputs JSON-equal to the scripts'.")


if __name__ == "__main__":
    main()
