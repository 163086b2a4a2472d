"""The search for pairs on Ray (`--engine ray`): time, driver memory and memory per worker,
against the local engine's search in the same run (alternately, each in its own process).

    python bench/ray_search.py --vectors 200000 --repeats 1

Synthetic 768-d vectors (bench/index_scale.py's planted near-duplicates, made a shard at a
time) are appended to one float32 file as the embedding cache appends
its vectors.f32; the walk at --threshold with `auto` (partitioned above 100K) runs:

- local: the vectors in memory and the partitioned index in this process, as `--engine local`;
- ray: a local Ray instance with --cpus CPUs; the search tasks read the file (the driver
  trains k-means on a sample and holds the pairs, not the vectors).

Per run: the walk's wall and CPU seconds, the driver's peak RSS, and for Ray each task's
peak RSS (its worker's VmHWM, reset as the task starts) and CPU seconds. Ray's start is
outside the walk's time (about 10 s here, once per run). The file is removed at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table  # noqa: E402
from index_scale import planted  # noqa: E402

GB = 1 << 30


def write_vectors(path: Path, n: int, dim: int) -> None:
    """``n`` planted vectors, made into the file a shard at a time (never all in memory)."""
    planted(n, dim, out=np.memmap(path, np.float32, mode="w+", shape=(n, dim))).flush()


def run_child(engine: str, path: Path, n: int, dim: int, thresholds: list[float], cpus: int, index: str,
              partitions: int, neighbours: bool = False) -> dict:
    """One engine's walks over the file, one per threshold, lowest first, in this process
    (started by the parent): their figures. A search that finds its pairs at once (Ray) is
    shared by the walks, as `curate dedup` shares it (a build from before: one per walk).
    ``neighbours``: then the report's neighbours, as `curate dedup` finds them: on Ray (a
    build that has them) chosen by tasks from the search's own products, else in the index the
    search offers."""
    from curate.registry import get_registry
    from curate.similarity import Channel, Pairs, walk
    try:
        from curate.similarity import SharedSearches
    except ImportError:
        SharedSearches = None
    from curate.vectors_file import VectorsFile
    kind = get_registry().get("index", index)
    options = {"partitions": partitions} if partitions else {}
    asked = {"neighbours": 16} if neighbours and "neighbours" in {f.name for f in dataclasses.fields(Channel)} else {}
    made = []
    ray_start = 0.0
    if engine == "ray":
        from curate.ray_engine import ray_pairs, start_ray
        started = time.monotonic()
        start_ray(None, num_cpus=cpus)
        ray_start = time.monotonic() - started
        vectors = np.memmap(path, np.float32, "r", shape=(n, dim))      # the driver reads only a sample
        channel = Channel("embedding", vectors, thresholds[0], kind, options, source=VectorsFile(path, np.arange(n), dim),
                          **asked)

        def pairs(channel, block):
            made.append(ray_pairs(channel, block, work_root=path.parent))
            return made[-1]
    else:
        vectors = np.fromfile(path, np.float32).reshape(n, dim)
        channel = Channel("embedding", vectors, thresholds[0], kind, options, **asked)
        pairs = Pairs
    searches = SharedSearches(pairs) if SharedSearches is not None else None
    if searches is not None:
        pairs = searches.pairs
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    wall, cpu = time.monotonic(), time.process_time()
    decisions = [walk([dataclasses.replace(channel, threshold=t)], pairs=pairs) for t in sorted(thresholds)]
    figures = {"engine": engine, "wall": time.monotonic() - wall, "driver_cpu": time.process_time() - cpu,
               "driver_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
               "driver_peak_before_walk": rss_before, "ray_start": ray_start,
               "removed": [int((d.duplicate_of >= 0).sum()) for d in decisions], "driver_rss_now": rss_now(),
               "decisions": hashlib.sha256(b"".join(d.duplicate_of.tobytes() for d in decisions)).hexdigest()[:16]}
    if neighbours:
        from curate.similarity import nearest_neighbours
        index = searches.index_of("embedding") if hasattr(searches, "index_of") else None
        kept = [bounds for _, bounds in getattr(made[0], "candidates", [])] if made else []
        figures["candidates"] = int(sum(bounds[-1] for bounds in kept))       # in the work files
        wall, cpu = time.monotonic(), time.process_time()
        parts = searches.nearest("embedding") if hasattr(searches, "nearest") else None
        if parts is not None:         # a part at a time (this build on Ray), as curate dedup reads them
            parts = list(parts)
            sims, ids = np.concatenate([s for s, _ in parts]), np.concatenate([i for _, i in parts])
        else:
            sims, ids = nearest_neighbours(vectors, kind, index=index, **options)
        figures.update(neighbours_wall=time.monotonic() - wall, neighbours_cpu=time.process_time() - cpu,
                       neighbours_peak=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                       neighbours=hashlib.sha256(ids.tobytes() + sims.tobytes()).hexdigest()[:16])
    if made:
        search = made[0]
        figures.update(stages=search.seconds, pairs=len(search.later), plan=vars(search.plan), searches=len(made),
                       tasks=[vars(cost) for search in made for cost in search.costs])
    return figures


def rss_now() -> dict:
    """This process's resident memory by kind, in bytes (anonymous, mapped files, shared memory:
    Ray's object store is mapped into the driver, and a result read from it is not a copy)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("RssAnon", "RssFile", "RssShmem"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def measure(engine: str, args, path: Path, pythonpath: str | None = None) -> dict:
    """A child process's figures, with its whole wall and CPU time (Ray's processes included
    once they exit with it); ``pythonpath``: where the child imports curate from (a baseline)."""
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); rc = subprocess.call(sys.argv[1:]); "
               "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
               "print('WHOLE', time.perf_counter() - t, u.ru_utime + u.ru_stime, file=sys.stderr); sys.exit(rc)")
    command = [sys.executable, "-c", wrapper, sys.executable, __file__, "--child", engine, "--file", str(path),
               "--vectors", str(args.vectors), "--dim", str(args.dim), "--threshold", *map(str, args.threshold),
               "--cpus", str(args.cpus), "--index", args.index, "--partitions", str(args.partitions)] + \
        (["--neighbours"] if args.neighbours else [])
    env = dict(os.environ, PYTHONPATH=pythonpath) if pythonpath else None
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode:
        raise SystemExit(f"{engine} failed:\n{result.stderr[-3000:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    whole = [line for line in result.stderr.splitlines() if line.startswith("WHOLE ")][-1].split()
    figures["process_wall"], figures["process_cpu"] = float(whole[1]), float(whole[2])
    return figures


def mb(value: float) -> str:
    return f"{value / (1 << 20):,.0f}"


def peak_and_own(tasks: list[dict]) -> str:
    """The largest peak RSS of ``tasks``, and the largest part of a peak that was the task's own."""
    return f"{mb(max(t['rss_peak'] for t in tasks))} / {mb(max(t['rss_peak'] - t['rss_start'] for t in tasks))}"


def chooser_cost(run: dict) -> str:
    """The CPU seconds and largest peak of the tasks that chose the neighbours (Ray, this build)."""
    tasks = [t for t in run.get("tasks", []) if t["task"] == "choose_nearest"]
    return f"{sum(t['cpu_seconds'] for t in tasks):.1f} / {mb(max(t['rss_peak'] for t in tasks))}" if tasks else "-"


def report(runs: list[dict], args) -> None:
    rows = []
    local = [r for r in runs if r["engine"] == "local"]
    for r in runs:
        ratio = f"{r['wall'] / local[0]['wall']:.2f}" if local else "-"
        tasks = [t for t in r.get("tasks", []) if t["task"].startswith("search")]
        assigns = [t for t in r.get("tasks", []) if t["task"].startswith("assign")]
        rows.append([r["engine"], f"{r['wall']:.1f}", ratio, f"{r['driver_cpu']:.1f}",
                     f"{sum(t['cpu_seconds'] for t in r.get('tasks', [])):.1f}" if tasks else "-",
                     f"{r['process_wall']:.1f} / {r['process_cpu']:.1f}", mb(r["driver_peak"]),
                     f"{len(tasks)}" if tasks else "-",
                     peak_and_own(tasks) if tasks else "-",
                     f"{mb(max(t['rss_peak'] for t in assigns))}" if assigns else "-",
                     " / ".join(f"{x:,}" for x in r["removed"]), r["decisions"]]
                    + ([f"{r['neighbours_wall']:.1f} / {r['neighbours_cpu']:.1f}", chooser_cost(r),
                        mb(r["neighbours_peak"]), r["neighbours"]] if args.neighbours else []))
    print_table(f"walk at {args.threshold}, {args.vectors:,} x {args.dim} planted vectors, index {args.index}, "
                f"{args.cpus} CPUs for Ray (load {os.getloadavg()[0]:.1f} at the end)",
                ["engine", "walk wall s", "/ local", "driver CPU s", "tasks CPU s",
                 "process wall / CPU s (no Ray workers)",
                 "driver peak MB", "search tasks", "task peak / own MB", "assign peak MB", "removed", "decisions"]
                + (["neighbours wall / driver CPU s", "choosing tasks: CPU s / peak MB", "driver peak MB after",
                    "neighbours"] if args.neighbours else []),
                rows)
    for r in runs:
        if "stages" in r:
            print(f"{r['engine']}: {r.get('searches', 1)} search(es); the first's stages "
                  f"{json.dumps({k: round(v, 1) for k, v in r['stages'].items()})}, "
                  f"plan {r['plan']}, {r['pairs']:,} pairs, Ray start {r['ray_start']:.1f} s"
                  + (f", {r['candidates']:,} neighbour candidates written" if r.get("candidates") else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--threshold", type=float, nargs="+", default=[0.8],
                        help="one walk per threshold, lowest first (as curate dedup -t ... -t ...)")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--index", default="auto")
    parser.add_argument("--partitions", type=int, default=0, help="0: the index's default (one per 250, at most sqrt(probe x vectors))")
    parser.add_argument("--engines", nargs="+", default=["local", "ray"])
    parser.add_argument("--folder", type=Path, default=Path(__file__).parent.parent,
                        help="where the vectors file goes (the disk needs vectors x dim x 4 bytes free)")
    parser.add_argument("--baseline", metavar="PYTHONPATH",
                        help="also run each engine of the curate importable from this path (a build before "
                             "a change), in the same run")
    parser.add_argument("--neighbours", action="store_true",
                        help="also time the report's neighbours after the walks, as curate dedup finds them")
    parser.add_argument("--child", choices=["local", "ray"])
    parser.add_argument("--file", type=Path)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, args.file, args.vectors, args.dim, args.threshold, args.cpus,
                                   args.index, args.partitions, args.neighbours)))
        return
    size = args.vectors * args.dim * 4
    free = shutil.disk_usage(args.folder).free
    if size > free - 2 * GB:
        raise SystemExit(f"{args.vectors:,} x {args.dim} float32 is {size / GB:.1f} GB; {args.folder} has "
                         f"{free / GB:.1f} GB free")
    with tempfile.TemporaryDirectory(dir=args.folder, prefix="ray-search-") as folder:
        path = Path(folder) / "vectors.f32"
        started = time.monotonic()
        write_vectors(path, args.vectors, args.dim)
        print(f"wrote {size / GB:.2f} GB in {time.monotonic() - started:.0f} s", flush=True)
        runs = []
        for _ in range(args.repeats):
            for engine in args.engines + ([f"{e}, baseline" for e in args.engines] if args.baseline else []):
                if engine.endswith(", baseline"):
                    runs.append(dict(measure(engine.split(",")[0], args, path, args.baseline), engine=engine))
                else:
                    runs.append(measure(engine, args, path))
                print(json.dumps({k: v for k, v in runs[-1].items() if k != "tasks"}), flush=True)
        report(runs, args)
        (Path(tempfile.gettempdir()) / f"ray_search_{args.vectors}.json").write_text(json.dumps(runs))


if __name__ == "__main__":
    main()
