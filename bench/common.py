"""Helpers shared by the benchmarks: timing, medians, peak memory, tables."""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CURATE_SHARED", ROOT.parent / "shared"))   # as the tests read it


def median_time(function, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_measured(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of a child process (GNU time is not everywhere)."""
    wall, peak, _ = run_measured_cpu(command)
    return wall, peak


def run_measured_cpu(command: list[str], env: dict | None = None) -> tuple[float, float, float]:
    """Wall seconds, peak RSS (MB) and CPU seconds (user + system) of a child process: on a
    shared machine the CPU time is the steadier measure, the wall time what a user waits.
    ``env``: the child's environment (default: this one's)."""
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "rc = subprocess.call(sys.argv[1:]); w = time.perf_counter() - t; "
               "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
               "print(w, u.ru_maxrss / 1024, u.ru_utime + u.ru_stime, file=sys.stderr); sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True, text=True, env=env)
    if result.returncode:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stderr[-2000:]}")
    wall, peak, cpu = result.stderr.strip().splitlines()[-1].split()
    return float(wall), float(peak), float(cpu)


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    print(f"\n{title}")
    print("| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(x).ljust(w) for x, w in zip(row, widths)) + " |")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class MemoryWatch:
    """Peak RSS (all of it, mapped files included) and peak anonymous RSS (what the process
    allocated: a memmap's pages are not in it) of this process over a ``with`` block, in MB
    (Linux: the peak is reset on entry through /proc/self/clear_refs; anonymous memory sampled
    every ``every`` seconds). Also the block's wall and CPU seconds (every thread's)."""

    def __init__(self, every: float = 0.05):
        self.every, self.peak_mb, self.anon_mb, self.wall, self.cpu = every, 0.0, 0.0, 0.0, 0.0
        self._stop = threading.Event()

    def __enter__(self):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def _sample(self):
        anon = 0
        while True:
            anon = max(anon, _status_kb("RssAnon"))
            self.anon_mb = anon / 1024
            if self._stop.wait(self.every):
                return

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu
        self._stop.set()
        self._thread.join()
        self.anon_mb = max(self.anon_mb, _status_kb("RssAnon") / 1024)
        self.peak_mb = _status_kb("VmHWM") / 1024
